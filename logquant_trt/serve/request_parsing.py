# SPDX-License-Identifier: Apache-2.0
"""A Triton request's input tensors -> (prompt token ids, SamplingParams), or BadRequest naming the value.

Triton itself refuses unknown inputs, wrong dtypes and wrong shapes before our code runs (its
message names the input, the dtype or shape it got and the one it expected). What is left here is
what only the values can tell: which prompt input was given, empty or undecodable text, and the
sampling fields (checked by SamplingParams). The prompt's token ids (empty, outside the vocabulary)
and capacity (prompt + max_tokens against max_seq_len) are the engine's checks, in
GenerationEngine.submit, which every caller goes through.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from logquant_trt.runtime.requests import RequestError, SamplingParams
from logquant_trt.serve.errors import BadRequest
from logquant_trt.serve.protocol import DEFAULT_MAX_TOKENS, INPUT_NAMES, PROMPT_INPUTS


@dataclasses.dataclass(frozen=True)
class ParsedRequest:
    prompt_token_ids: tuple[int, ...]
    params: SamplingParams


def parse_request(inputs: Mapping[str, np.ndarray], tokenizer: Any) -> ParsedRequest:
    """Validate and convert one request's inputs (name -> array, optional inputs absent)."""
    unknown = sorted(set(inputs) - set(INPUT_NAMES))
    if unknown:  # Triton refuses these already; this guards other callers
        raise BadRequest(f"unknown input {unknown[0]!r}; inputs: {', '.join(INPUT_NAMES)}")
    given = [name for name in PROMPT_INPUTS if name in inputs]
    if len(given) != 1:
        raise BadRequest(f"give exactly one of text_input, input_ids; got {', '.join(given) or 'neither'}")
    try:
        prompt = _prompt_ids(inputs, tokenizer)
        params = SamplingParams(
            max_tokens=_scalar(inputs, "max_tokens", int, DEFAULT_MAX_TOKENS),
            temperature=_scalar(inputs, "temperature", float, 0.0),
            top_k=_scalar(inputs, "top_k", int, 0),
            top_p=_scalar(inputs, "top_p", float, 1.0),
            seed=_scalar(inputs, "seed", int, None),
            ignore_eos=_scalar(inputs, "ignore_eos", bool, False),
            stop_token_ids=tuple(int(t) for t in inputs.get("stop_token_ids", np.zeros(0, np.int64)).reshape(-1)),
        )
    except RequestError as error:
        raise BadRequest(str(error)) from None
    return ParsedRequest(prompt, params)


def _prompt_ids(inputs: Mapping[str, np.ndarray], tokenizer: Any) -> tuple[int, ...]:
    if "input_ids" in inputs:
        # Python ints, so that the engine's check (and message) sees e.g. 5, not np.int64(5).
        return tuple(int(t) for t in inputs["input_ids"].reshape(-1))
    text = _text(inputs["text_input"])
    if not text:
        raise RequestError("text_input", text, "the prompt is empty")
    ids = tokenizer.encode(text)
    if not ids:
        raise RequestError("text_input", text, "the prompt tokenizes to no tokens")
    return tuple(ids)


def _text(array: np.ndarray) -> str:
    items = array.reshape(-1)
    if items.size != 1:  # Triton enforces shape [1]; a direct caller may not
        raise RequestError("text_input", items.tolist(), "must hold exactly one string")
    raw = items[0]
    if isinstance(raw, str):
        return raw
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as error:
        raise RequestError("text_input", bytes(raw), f"is not UTF-8 ({error.reason} at byte {error.start})") from None


def _scalar(inputs: Mapping[str, np.ndarray], name: str, kind: type, default: Any) -> Any:
    if name not in inputs:
        return default
    values = inputs[name].reshape(-1)
    if values.size != 1:
        raise RequestError(name, values.tolist(), "must hold exactly one value")
    # .item() gives a Python number, so SamplingParams' checks (and messages) see e.g. 0 and nan, not np.int32.
    return kind(values[0].item())
