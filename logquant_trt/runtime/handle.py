# SPDX-License-Identifier: Apache-2.0
"""A submitted request as the caller sees it: a stream of new tokens, then a result.

The engine thread pushes tokens and the final result; any number of caller threads may wait.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

from logquant_trt.runtime.requests import FinishReason, GenerationResult

_DONE = object()


class EngineError(RuntimeError):
    """The engine failed while serving a request (the request did not complete)."""


class RequestHandle:
    def __init__(self, request_id: int, prompt_token_ids: tuple[int, ...]) -> None:
        self.request_id = request_id
        self.prompt_token_ids = prompt_token_ids
        self._tokens: list[int] = []
        self._events: queue.Queue = queue.Queue()
        self._finished = threading.Event()
        self._result: GenerationResult | None = None
        self._error: BaseException | None = None
        self.cancelled = False

    # -- engine side ------------------------------------------------------------------------------------------

    def _push(self, token: int) -> None:
        self._tokens.append(token)
        self._events.put(token)

    def _finish(self, reason: FinishReason) -> None:
        self._result = GenerationResult(self.request_id, self.prompt_token_ids, tuple(self._tokens), reason)
        self._finished.set()
        self._events.put(_DONE)

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self._finished.set()
        self._events.put(_DONE)

    # -- caller side ------------------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    def cancel(self) -> None:
        """Ask the engine to stop this request; it finishes with FinishReason.ABORTED."""
        self.cancelled = True

    def stream(self, timeout: float | None = None) -> Iterator[int]:
        """Each new token id as the engine produces it; ends when the request finishes.

        Only one consumer may stream a handle. Raises TimeoutError if no token comes within `timeout` s.
        """
        while True:
            try:
                event = self._events.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"request {self.request_id}: no token within {timeout} s") from None
            if event is _DONE:
                if self._error is not None:
                    raise EngineError(f"request {self.request_id} failed: {self._error}") from self._error
                return
            yield event

    def result(self, timeout: float | None = None) -> GenerationResult:
        if not self._finished.wait(timeout):
            raise TimeoutError(f"request {self.request_id} not finished within {timeout} s")
        if self._error is not None:
            raise EngineError(f"request {self.request_id} failed: {self._error}") from self._error
        assert self._result is not None
        return self._result
