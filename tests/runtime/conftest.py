# SPDX-License-Identifier: Apache-2.0
"""The runtime tests' tokenizer; their models and configs (tiny_hf, small_config) come from tests/conftest.py."""

from types import SimpleNamespace

import pytest

EOS = 299


@pytest.fixture(scope="module")
def tokenizer() -> SimpleNamespace:
    """The engine reads only eos_token_id from a tokenizer."""
    return SimpleNamespace(eos_token_id=EOS)
