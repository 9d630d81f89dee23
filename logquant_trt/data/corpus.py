# SPDX-License-Identifier: Apache-2.0
"""English evaluation text: CPython's ``pydoc_data/topics.py`` (PSF licence).

About 465k characters of prose (the language reference topics), present on every CPython
install, so perplexity runs need no dataset download. It is about 113k SmolLM2 tokens.
"""

import functools
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["load_corpus_text", "corpus_token_ids"]


@functools.cache
def load_corpus_text() -> str:
    """The ``pydoc_data.topics.topics`` values in sorted key order, separated by blank lines."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def corpus_token_ids(
    tokenizer: "PreTrainedTokenizerBase", num_tokens: int, offset: int = 0
) -> torch.LongTensor:
    """Tokens ``[offset, offset + num_tokens)`` of the corpus, shape ``[1, num_tokens]``, int64.

    No special tokens are added (no BOS), so windows at different offsets are comparable.

    Raises:
        ValueError: ``num_tokens < 1``, ``offset < 0``, or the corpus is shorter than
            ``offset + num_tokens`` tokens.
    """
    if num_tokens < 1 or offset < 0:
        raise ValueError(f"need num_tokens >= 1 and offset >= 0, got num_tokens={num_tokens}, offset={offset}")
    # verbose=False: the whole corpus exceeds model_max_length on purpose; we slice below.
    ids = tokenizer(load_corpus_text(), add_special_tokens=False, return_attention_mask=False,
                    verbose=False)["input_ids"]
    if offset + num_tokens > len(ids):
        raise ValueError(
            f"corpus has {len(ids)} tokens, too short for num_tokens={num_tokens} at offset={offset}")
    return torch.tensor([ids[offset:offset + num_tokens]], dtype=torch.long)
