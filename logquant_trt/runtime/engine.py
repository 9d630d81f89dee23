# SPDX-License-Identifier: Apache-2.0
"""The generation engine: continuous batching over a fixed set of cache rows.

Each `step()` admits waiting requests while a row and their pages are free (prefilling each one
alone with SDPA, the prompt quantized on write, its first token sampled from the prefill), then runs
one decode step over all rows (fused kernel, CUDA graph) and retires the requests that stopped. Pages
for a request's whole budget (prompt + max_tokens) are taken at admission, so a running request
never waits for memory; requests that do not fit wait in arrival order.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from logquant_trt.config import LogQuantConfig
from logquant_trt.runtime.executor import Executor, ModelExecutor
from logquant_trt.runtime.handle import EngineError, RequestHandle
from logquant_trt.runtime.model import DecoderModel
from logquant_trt.runtime.pages import PageAllocator
from logquant_trt.runtime.requests import FinishReason, RequestError, SamplingParams, check_prompt
from logquant_trt.runtime.sampler import new_generator, sample_rows

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class _Running:
    handle: RequestHandle
    params: SamplingParams
    stop_ids: frozenset[int]
    generator: torch.Generator | None
    row: int = -1
    pages: list[int] = dataclasses.field(default_factory=list)
    generated: int = 0
    last_token: int = -1

    @property
    def position(self) -> int:
        """Position of last_token, the next decode input."""
        return len(self.handle.prompt_token_ids) + self.generated - 1


class GenerationEngine:
    """Generates for many requests at once over one KV cache; thread-safe submit()."""

    def __init__(self, executor: Executor, tokenizer: Any) -> None:
        """executor: the model and its cache (ModelExecutor, or serve's PagedGraphExecutor); tokenizer: anything
        with an eos_token_id (or None)."""
        self.executor, self.tokenizer = executor, tokenizer
        self.max_batch, self.max_seq_len = executor.max_batch, executor.max_seq_len
        self.vocab_size = executor.vocab_size
        self.pages = PageAllocator(executor.num_pages)
        self._eos = getattr(tokenizer, "eos_token_id", None) if tokenizer is not None else None
        self._ids = itertools.count()
        self._lock = threading.Condition()
        self._waiting: collections.deque[_Running] = collections.deque()
        self._rows: list[_Running | None] = [None] * self.max_batch
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._stopped = False  # stop() was called and start() not since: submit() refuses
        self._failure: BaseException | None = None  # the loop thread died of this: submit() refuses
        self.peak_batch = 0  # most requests decoded in one step (evidence of batching, for tests and logs)

    @classmethod
    def from_model(cls, model: DecoderModel, tokenizer: Any, cache_config: LogQuantConfig,
                   **executor_args: Any) -> "GenerationEngine":
        """An engine over the runtime's DecoderModel; executor_args go to ModelExecutor (max_batch, max_seq_len,
        num_pages, backend, cuda_graphs)."""
        return cls(ModelExecutor(model, cache_config, **executor_args), tokenizer)

    @classmethod
    def from_pretrained(cls, model_path: str | Path | None = None, cache_config: LogQuantConfig | None = None, *,
                        device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                        **engine_args: Any) -> "GenerationEngine":
        """An engine for an HF checkpoint directory (None: the embedded SmolLM2-135M).

        dtype defaults to float16 on CUDA and float32 elsewhere; cache_config defaults to LogQuant+OTT
        in that dtype.
        """
        from logquant_trt.models.checkpoint import load_model
        from logquant_trt.models.embedded import ensure_embedded_model

        device = torch.device(device)
        dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        path = Path(model_path) if model_path is not None else ensure_embedded_model()
        hf_model, tokenizer = load_model(path, dtype=dtype, device="cpu")
        model = DecoderModel.from_hf(hf_model, dtype=dtype, device=device)
        del hf_model
        dtype_name = str(dtype).removeprefix("torch.")
        config = (cache_config or LogQuantConfig(dtype=dtype_name)).replace(dtype=dtype_name)
        return cls.from_model(model, tokenizer, config, **engine_args)

    # -- requests ---------------------------------------------------------------------------------------------

    def submit(self, prompt_token_ids: Sequence[int], params: SamplingParams | None = None) -> RequestHandle:
        """Queue a request; raises RequestError (naming the value) if it can never be served."""
        params = params or SamplingParams()
        if not isinstance(params, SamplingParams):
            raise RequestError("params", params, "must be a SamplingParams")
        prompt = check_prompt(prompt_token_ids, self.vocab_size)
        if len(prompt) >= self.max_seq_len:
            raise RequestError("prompt_token_ids", f"<{len(prompt)} tokens>",
                               f"the prompt leaves no room for a new token within max_seq_len={self.max_seq_len}")
        limit = self.executor.max_prompt
        if limit is not None and len(prompt) > limit:
            raise RequestError("prompt_token_ids", f"<{len(prompt)} tokens>",
                               f"the model takes prompts of at most {limit} tokens")
        total = len(prompt) + params.max_tokens
        if total > self.max_seq_len:
            raise RequestError("max_tokens", params.max_tokens,
                               f"prompt ({len(prompt)} tokens) + max_tokens = {total} exceeds max_seq_len="
                               f"{self.max_seq_len}")
        needed = self.executor.pages_for(total)
        if needed > self.pages.num_pages:
            raise RequestError("max_tokens", params.max_tokens,
                               f"{total} tokens need {needed} pages; the pool has {self.pages.num_pages}")
        stop_ids = set(params.stop_token_ids)
        if self._eos is not None and not params.ignore_eos:
            stop_ids.add(int(self._eos))
        with self._lock:
            if self._failure is not None:
                raise EngineError(f"the engine failed and serves no more requests: {self._failure!r}")
            if self._stopping or self._stopped:
                raise EngineError("the engine is stopped; it accepts no new requests until start()")
            handle = RequestHandle(next(self._ids), prompt)
            generator = new_generator(params, self.executor.device)
            self._waiting.append(_Running(handle, params, frozenset(stop_ids), generator))
            self._lock.notify_all()
        return handle

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams | None = None) -> list:
        """Submit every prompt and wait for all results (steps the engine itself unless start() was called)."""
        handles = [self.submit(p, params) for p in prompts]
        if self._thread is None:
            while not all(h.done for h in handles):
                self.step()
        return [h.result() for h in handles]

    @property
    def has_work(self) -> bool:
        return bool(self._waiting) or any(r is not None for r in self._rows)

    # -- the loop ---------------------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self) -> None:
        """Admit what fits, decode one token for every running request, retire finished ones."""
        with self._lock:
            admitted = self._admit()
        for running in admitted:
            self._prefill(running)
        busy = [r for r in self._rows if r is not None]
        for running in busy:
            if running.handle.cancelled:
                self._retire(running, FinishReason.ABORTED)
        busy = [r for r in self._rows if r is not None]
        if not busy:
            return
        self.peak_batch = max(self.peak_batch, len(busy))
        logits = self.executor.decode([r.row for r in busy], [r.last_token for r in busy], [r.position for r in busy])
        tokens = sample_rows(logits, [r.row for r in busy], [r.params for r in busy], [r.generator for r in busy])
        for running, token in zip(busy, tokens):
            self._emit(running, token)

    def _admit(self) -> list[_Running]:
        admitted = []
        while self._waiting:
            running = self._waiting[0]
            if running.handle.cancelled:
                self._waiting.popleft()
                running.handle._finish(FinishReason.ABORTED)
                continue
            row = next((i for i, r in enumerate(self._rows) if r is None), None)
            if row is None:
                break
            total = len(running.handle.prompt_token_ids) + running.params.max_tokens
            pages = self.pages.allocate(self.executor.pages_for(total))
            if pages is None:
                break
            self._waiting.popleft()
            running.row, running.pages = row, pages
            self._rows[row] = running
            admitted.append(running)
        return admitted

    def _prefill(self, running: _Running) -> None:
        logits = self.executor.prefill(running.row, running.pages, running.handle.prompt_token_ids)
        token = sample_rows(logits[None], [0], [running.params], [running.generator])[0]
        self._emit(running, token)

    def _emit(self, running: _Running, token: int) -> None:
        running.handle._push(token)
        running.generated += 1
        running.last_token = token
        if token in running.stop_ids:
            self._retire(running, FinishReason.STOP)
        elif running.generated >= running.params.max_tokens:
            self._retire(running, FinishReason.LENGTH)

    def _retire(self, running: _Running, reason: FinishReason) -> None:
        self._rows[running.row] = None
        self.executor.release(running.row)
        self.pages.free(running.pages)
        running.handle._finish(reason)

    # -- background thread ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Run step() on a background thread whenever there is work (for servers)."""
        with self._lock:
            if self._thread is not None:
                return
            if self._failure is not None:
                raise EngineError(f"the engine failed and cannot restart: {self._failure!r}")
            self._stopping = self._stopped = False
            self._thread = threading.Thread(target=self._loop, name="logquant-engine", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop the thread; requests not finished by then end as ABORTED, and submit() refuses new ones until
        start() is called again."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        with self._lock:
            self._thread = None
            for running in [*self._waiting, *(r for r in self._rows if r is not None)]:
                if running.row >= 0 and self._rows[running.row] is running:
                    self._retire(running, FinishReason.ABORTED)
                else:
                    running.handle._finish(FinishReason.ABORTED)
            self._waiting.clear()
            self._stopping = False
            self._stopped = True

    def _loop(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self.has_work and not self._stopping:
                        self._lock.wait()
                    if self._stopping:
                        return
                self.step()
        except BaseException as error:  # fail every pending request rather than hang its caller
            with self._lock:
                self._failure = error
                for running in [*self._waiting, *(r for r in self._rows if r is not None)]:
                    running.handle._fail(error)
                self._waiting.clear()
                self._rows = [None] * self.max_batch
                self._thread = None
            logger.exception("the generation loop failed; pending requests were failed")

    def __enter__(self) -> "GenerationEngine":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
