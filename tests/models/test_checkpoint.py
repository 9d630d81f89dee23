# SPDX-License-Identifier: Apache-2.0
"""The model-type and head_dim rules that checkpoint loading, patching and the runtime share."""

from types import SimpleNamespace

import pytest

from logquant_trt.models.checkpoint import check_model_type, head_dim_of


@pytest.mark.parametrize("config, expected", [
    (SimpleNamespace(head_dim=64, hidden_size=256, num_attention_heads=2), 64),  # set: wins over the quotient
    (SimpleNamespace(head_dim=None, hidden_size=256, num_attention_heads=2), 128),
    (SimpleNamespace(hidden_size=256, num_attention_heads=4), 64),
])
def test_head_dim_defaults_to_hidden_size_over_heads(config: SimpleNamespace, expected: int) -> None:
    assert head_dim_of(config) == expected


def test_supported_model_type_is_returned() -> None:
    assert check_model_type(SimpleNamespace(model_type="qwen2")) == "qwen2"


@pytest.mark.parametrize("config, source, message", [
    (SimpleNamespace(model_type="gpt2"), "", r"^model_type='gpt2' is not supported; supported: llama, qwen2, mistral$"),
    (SimpleNamespace(model_type="gpt2"), "/ckpt", r"^model_type='gpt2' in /ckpt is not supported"),
    (SimpleNamespace(), "", r"^model_type=None is not supported"),
])
def test_unsupported_model_type_is_named(config: SimpleNamespace, source: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_model_type(config, source)
