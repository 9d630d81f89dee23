# SPDX-License-Identifier: Apache-2.0
"""The pydoc_data corpus: size, determinism, slicing and argument errors."""

import pytest
import torch

from logquant_trt.data.corpus import corpus_token_ids, load_corpus_text
from logquant_trt.models.embedded import ensure_embedded_model


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ensure_embedded_model(), local_files_only=True)


def test_text_is_large_and_deterministic() -> None:
    text = load_corpus_text()
    assert len(text) > 400_000
    # Sorted key order: "assert" is the first topic.
    assert text.startswith('The "assert" statement')
    assert load_corpus_text() == text


def test_corpus_has_over_100k_tokens(tokenizer) -> None:
    n = len(tokenizer(load_corpus_text(), add_special_tokens=False, verbose=False)["input_ids"])
    assert n > 100_000


def test_shape_dtype_and_offset(tokenizer) -> None:
    ids = corpus_token_ids(tokenizer, 97)
    assert ids.shape == (1, 97) and ids.dtype == torch.long
    shifted = corpus_token_ids(tokenizer, 17, offset=80)
    assert torch.equal(shifted[0], ids[0, 80:97])
    assert tokenizer.decode(ids[0, :4]).startswith('The "assert')


@pytest.mark.parametrize("num_tokens", [10_000_000, 0, -5])
def test_bad_num_tokens_raises_with_value(tokenizer, num_tokens: int) -> None:
    with pytest.raises(ValueError, match=f"num_tokens={num_tokens}"):
        corpus_token_ids(tokenizer, num_tokens)


def test_offset_past_end_raises(tokenizer) -> None:
    with pytest.raises(ValueError, match="offset=200000"):
        corpus_token_ids(tokenizer, 10, offset=200_000)
