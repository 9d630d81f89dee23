# SPDX-License-Identifier: Apache-2.0
"""The exceptions an infer function raises to fail one request (the server keeps serving).

PyTriton turns any exception other than PyTritonUnrecoverableError into an error response for
the requests of that call and keeps serving (pytriton/proxy/inference.py, InferenceHandler.
_handle_requests). The text it sends is `traceback.format_exception(None, e, e.__traceback__)`,
which would show clients our server's file paths and frames. These exceptions report no traceback,
so the client reads "BadRequest: max_tokens=0 is invalid: ..." (after PyTriton's own wrapper text
for non-streaming models); the server's log keeps the full traceback.
"""

from __future__ import annotations

from types import TracebackType

# What clients look for to find our message inside PyTriton's wrapper text (error_message).
ERROR_PREFIXES = ("BadRequest: ", "GenerationFailed: ")


class _WithoutTraceback(Exception):
    """Reports no traceback to traceback.* readers (PyTriton's error text); Python still records it."""

    @property  # type: ignore[override]
    def __traceback__(self) -> TracebackType | None:
        return None

    @__traceback__.setter
    def __traceback__(self, value: TracebackType | None) -> None:
        pass


class BadRequest(_WithoutTraceback, ValueError):
    """A request refused before it runs; the message names the bad field and value."""


class GenerationFailed(_WithoutTraceback, RuntimeError):
    """A valid request that could not be served (the engine failed, or the server is shutting down)."""


def error_message(text: str) -> str:
    """Our message out of a Triton error text, or the text unchanged when it holds none."""
    for line in text.replace("\\n", "\n").splitlines():
        for prefix in ERROR_PREFIXES:
            at = line.find(prefix)
            if at >= 0:
                return line[at + len(prefix):].strip()
    return text.strip()
