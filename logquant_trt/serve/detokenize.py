# SPDX-License-Identifier: Apache-2.0
"""Token ids -> text, incrementally, for streaming.

Decoding each token alone breaks words that byte-level BPE splits across tokens (a multi-byte
character, or a leading-space marker that only the next token resolves). Instead the whole output
so far is decoded and the new suffix emitted; a suffix ending in U+FFFD (an incomplete UTF-8
sequence) is held back until the next token completes it. The concatenated pieces equal
decode(all ids), which the tests check.
"""

from __future__ import annotations

from typing import Any

_INCOMPLETE = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._emitted = 0  # characters of decode(ids) already handed out

    def push(self, token_ids: list[int]) -> str:
        """The text the new ids add (possibly empty while a character is incomplete)."""
        self._ids.extend(token_ids)
        text = decode(self._tokenizer, self._ids)
        if text.endswith(_INCOMPLETE):
            return ""
        return self._take(text)

    def flush(self) -> str:
        """Whatever is still held back, at the end of generation."""
        return self._take(decode(self._tokenizer, self._ids))

    def _take(self, text: str) -> str:
        piece = text[self._emitted:]
        self._emitted = len(text)
        return piece


def decode(tokenizer: Any, token_ids: list[int] | tuple[int, ...]) -> str:
    """The text of generated ids: special tokens (EOS) left out."""
    return tokenizer.decode(list(token_ids), skip_special_tokens=True)
