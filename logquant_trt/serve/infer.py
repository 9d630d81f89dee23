# SPDX-License-Identifier: Apache-2.0
"""The infer functions PyTriton calls, on top of one shared GenerationEngine.

Concurrency (issue #6: concurrent requests are batched by the engine, not serialized):
- The one-response model runs with one Triton instance per engine row (server.py binds
  `blocking_infer` that many times). Each instance's execute() blocks on its request's handle, so
  up to max_batch requests wait at once while the engine's step loop decodes them together.
- The streaming model is decoupled: Triton's execute() returns at once and PyTriton drives an
  async generator per request on one event loop, so one instance carries any number of streams.
  A pump thread per stream moves its responses (stream_outputs) from the handle into that loop.
Both models take one request per execute (max_batch_size 0): an error then belongs to that request
alone; PyTriton would fail every request of a Triton batch with the first one's error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import numpy as np

from logquant_trt.runtime.handle import EngineError, RequestHandle
from logquant_trt.runtime.requests import GenerationResult, RequestError
from logquant_trt.serve.detokenize import IncrementalDetokenizer, decode
from logquant_trt.serve.errors import BadRequest, GenerationFailed
from logquant_trt.serve.protocol import is_final
from logquant_trt.serve.protocol import output_arrays as outputs
from logquant_trt.serve.request_parsing import parse_request

logger = logging.getLogger(__name__)

Outputs = dict[str, np.ndarray]  # one response: protocol.OUTPUTS by name


class GenerationService:
    """Parses requests, submits them to the engine and formats the outputs."""

    def __init__(self, engine: Any, stream_threads: int | None = None) -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer
        # Enough threads that every row of the engine, plus as many queued streams, is pumped at once.
        self._pumps = concurrent.futures.ThreadPoolExecutor(
            max_workers=stream_threads or 2 * engine.max_batch, thread_name_prefix="logquant-stream")
        self._lock = threading.Lock()
        self._closed = False
        self.in_flight = 0  # requests submitted to the engine and not finished
        self.peak_in_flight = 0  # evidence that Triton hands requests over concurrently (tests, logs)

    def close(self) -> None:
        """Refuse new requests (before engine.stop(), so that a request arriving during shutdown gets this
        server's message rather than the engine's)."""
        with self._lock:
            self._closed = True
        self._pumps.shutdown(wait=False, cancel_futures=True)

    def submit(self, inputs: Mapping[str, np.ndarray]) -> RequestHandle:
        """The engine's handle for one request, or BadRequest naming what is wrong with it. Every handle it
        returns must be given back to release()."""
        # PyTriton's Request has items() but no get(): take a plain dict.
        parsed = parse_request(dict(inputs.items()), self.tokenizer)
        with self._lock:  # so that close() waits for a submit in progress
            if self._closed:
                raise GenerationFailed("the server is shutting down; it accepts no new requests")
            try:
                handle = self.engine.submit(parsed.prompt_token_ids, parsed.params)
            except RequestError as error:  # the prompt's ids, capacity: prompt + max_tokens > max_seq_len, ...
                raise BadRequest(str(error)) from None
            except RuntimeError as error:  # the engine is stopping
                raise GenerationFailed(str(error)) from None
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            return handle

    def release(self, handle: RequestHandle) -> None:
        """Done with a submitted request, whatever happened: a request still running (its client went away, or
        another request of its call failed) is cancelled, so that it frees its engine row."""
        if not handle.done:
            handle.cancel()
        with self._lock:
            self.in_flight -= 1

    # -- the one-response model ----------------------------------------------------------------------------

    def blocking_infer(self, requests: list[Mapping[str, np.ndarray]]) -> list[Outputs]:
        handles: list[RequestHandle] = []
        try:
            for request in requests:
                handles.append(self.submit(request))
            return [self._final_outputs(handle.result()) for handle in handles]
        except EngineError as error:
            raise GenerationFailed(str(error)) from None
        finally:  # one path for every way out, a refused later request of the call included
            for handle in handles:
                self.release(handle)

    def _final_outputs(self, result: GenerationResult) -> Outputs:
        return outputs(decode(self.tokenizer, result.token_ids), result.token_ids, result.finish_reason.value)

    # -- the streaming (decoupled) model -------------------------------------------------------------------

    async def stream_infer(self, requests: list[Mapping[str, np.ndarray]]) -> AsyncIterator[list[Outputs]]:
        if len(requests) != 1:  # max_batch_size 0 gives one request per call; guard the assumption
            raise BadRequest(f"the streaming model takes one request per call, got {len(requests)}")
        handle = self.submit(requests[0])
        events: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def post(event: tuple[str, Any]) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the loop closed: PyTriton is shutting down and nobody reads this stream
                handle.cancel()

        pump = None
        try:
            pump = self._pumps.submit(_pump, handle, self.tokenizer, post)
            while True:
                kind, value = await events.get()
                if kind == "error":
                    raise GenerationFailed(f"generation failed: {value}")
                yield [value]
                if is_final(value):
                    return
        finally:
            if pump is not None:
                pump.cancel()
            self.release(handle)


def stream_outputs(handle: RequestHandle, tokenizer: Any) -> Iterator[Outputs]:
    """A request's streaming responses: one per token, then the final one with the text held back and the
    finish_reason (protocol.is_final). Raises EngineError if the request fails. Shared by the streaming model
    here and the TensorRT model (trt_python_model.py)."""
    detokenizer = IncrementalDetokenizer(tokenizer)
    for token in handle.stream():
        yield outputs(detokenizer.push([token]), (token,), "")
    yield outputs(detokenizer.flush(), (), handle.result().finish_reason.value)


def _pump(handle: RequestHandle, tokenizer: Any, post: Callable[[tuple[str, Any]], None]) -> None:
    """Runs in a pump thread: forwards each response, or the failure."""
    try:
        for response in stream_outputs(handle, tokenizer):
            post(("response", response))
    except Exception as error:  # noqa: BLE001 - the failure is reported to the request's client
        logger.exception("request %s failed", handle.request_id)
        post(("error", error))
