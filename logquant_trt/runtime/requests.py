# SPDX-License-Identifier: Apache-2.0
"""What a client asks the runtime for, and what it gets back.

`SamplingParams` is validated on construction; `RequestError` (a ValueError) names the bad
field and value, so that the server can hand the message straight back to the client.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Sequence


class RequestError(ValueError):
    """A request the runtime refuses: the message names the bad field and its value."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        super().__init__(f"{field}={_short(value)} is invalid: {reason}")
        self.field = field
        self.value = value


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens and when to stop.

    Attributes:
        max_tokens: new tokens to generate at most (>= 1).
        temperature: 0 is greedy; > 0 samples from softmax(logits / temperature).
        top_k: keep the k most likely tokens before sampling; 0 keeps all.
        top_p: keep the smallest set of tokens whose probability reaches top_p (nucleus); 1 keeps all.
        seed: seeds this request's own generator, so a sampled output does not depend on which
            other requests share its batch; None draws a seed.
        stop_token_ids: generation ends after emitting one of these (the tokenizer's EOS is added
            by the engine unless ignore_eos).
        ignore_eos: do not stop at the tokenizer's EOS.
    """

    max_tokens: int = 16
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        problem = next(iter(self.problems()), None)
        if problem:
            raise RequestError(*problem)

    def problems(self) -> list[tuple[str, object, str]]:
        """Every (field, value, reason) that makes these parameters unusable."""
        found: list[tuple[str, object, str]] = []

        def is_int(x: object) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

        if not is_int(self.max_tokens) or self.max_tokens < 1:
            found.append(("max_tokens", self.max_tokens, "must be an int >= 1"))
        if not isinstance(self.temperature, (int, float)) or not math.isfinite(self.temperature) \
                or self.temperature < 0:
            found.append(("temperature", self.temperature, "must be a finite number >= 0"))
        if not is_int(self.top_k) or self.top_k < 0:
            found.append(("top_k", self.top_k, "must be an int >= 0 (0 disables top-k)"))
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            found.append(("top_p", self.top_p, "must be in (0, 1]"))
        if self.seed is not None and (not is_int(self.seed) or not 0 <= self.seed < 2**63):
            found.append(("seed", self.seed, "must be None or an int in [0, 2**63)"))
        if not all(is_int(t) and t >= 0 for t in self.stop_token_ids):
            found.append(("stop_token_ids", self.stop_token_ids, "must be non-negative ints"))
        return found

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class FinishReason(str, enum.Enum):
    STOP = "stop"  # emitted a stop token
    LENGTH = "length"  # reached max_tokens
    ABORTED = "aborted"  # cancelled, or the engine stopped first


@dataclasses.dataclass(frozen=True)
class GenerationResult:
    """A finished request: its new tokens (the stop token included, if one ended it)."""

    request_id: int
    prompt_token_ids: tuple[int, ...]
    token_ids: tuple[int, ...]
    finish_reason: FinishReason


def check_prompt(prompt: Sequence[int], vocab_size: int) -> tuple[int, ...]:
    """The prompt as a tuple of token ids, or RequestError naming what is wrong with it."""
    if isinstance(prompt, (str, bytes)):
        raise RequestError("prompt_token_ids", prompt, "must be token ids; tokenize text first")
    try:
        ids = tuple(prompt)
    except TypeError:
        raise RequestError("prompt_token_ids", prompt, "must be a sequence of ints") from None
    if not ids:
        raise RequestError("prompt_token_ids", ids, "the prompt is empty")
    bad = next((t for t in ids if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < vocab_size), None)
    if bad is not None:
        raise RequestError("prompt_token_ids", bad, f"every token id must be an int in [0, {vocab_size})")
    return ids
