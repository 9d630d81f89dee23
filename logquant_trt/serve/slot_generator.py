# SPDX-License-Identifier: Apache-2.0
"""Continuous batching over the exported graph's contract, for the TensorRT engine in Triton.

The engine of `make engine` is PagedCausalLM: (input_ids, position_ids, context_lengths, cache) ->
logits, with the cache updated in place (docs/export.md, docs/plugin.md). `SlotGenerator` drives
any step function with that contract: TensorRT in the Triton Python backend (trt_python_model.py),
or PagedCausalLM itself on the CPU, which is how the tests check this loop without TensorRT.

Layout: one cache row (slot) per sequence, max_batch slots. Slot s owns the fixed pages
[s*M, (s+1)*M) (the identity block table of LayerCache.empty), so no page allocator is needed;
the per-sequence tensors of a slot are row s, contiguous, so a prefill binds views of row s alone.
A decode step always runs every slot (idle ones reset to an empty cache and fed token 0): one
static shape, and a row's arithmetic never depends on how many others are busy.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import threading
from collections.abc import Callable, Sequence

import torch

from logquant_trt.ops.logquant_attention import CACHE_INPUTS, CACHE_OUTPUTS, LayerCache
from logquant_trt.runtime.handle import RequestHandle
from logquant_trt.runtime.requests import FinishReason, RequestError, SamplingParams, check_prompt
from logquant_trt.runtime.sampler import new_generator, sample_rows

logger = logging.getLogger(__name__)

# step(input_ids [B, n] int64, position_ids [B, n] int64, context_lengths [B] int32, cache) -> logits [B, n, V];
# cache: CACHE_INPUTS of layer 0, layer 1, ... for these B rows, updated in place by the step.
StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]], torch.Tensor]

_PAGE_TENSORS = ("k_codes", "k_params", "v_codes", "v_params", "dup_mask")


class SlotCache:
    """Every layer's cache tensors for max_batch slots (LayerCache.empty: identity block tables)."""

    def __init__(self, layers: list[LayerCache]) -> None:
        self.layers = [dict(zip(CACHE_INPUTS, layer.tensors)) for layer in layers]
        table = self.layers[0]["block_table"]
        self.num_slots, self.blocks_per_slot = table.shape

    def views(self, start: int, stop: int) -> list[torch.Tensor]:
        """The step's cache argument for slots [start, stop): pages whole, per-sequence tensors sliced."""
        return [t if name in _PAGE_TENSORS else t[start:stop]
                for layer in self.layers for name, t in layer.items()]

    def reset(self, slot: int) -> None:
        """Make slot empty (seq_len = num_sealed = 0, no retained tokens, no masked slots in its pages)."""
        pages = self.layers[0]["block_table"][slot].long()
        for layer in self.layers:
            layer["seq_len"][slot] = 0
            layer["num_sealed"][slot] = 0
            layer["retained_pos"][slot] = -1
            layer["dup_mask"][pages] = 0  # a page's masks are rewritten at its seal; zero them anyway


def torch_step(lm: torch.nn.Module) -> StepFn:
    """PagedCausalLM as a StepFn: it returns new cache tensors, which are copied back into the views."""

    @torch.no_grad()
    def step(input_ids: torch.Tensor, position_ids: torch.Tensor, context_lengths: torch.Tensor,
             cache: list[torch.Tensor]) -> torch.Tensor:
        logits, *new = lm(input_ids, position_ids, context_lengths, *cache)
        width_in, width_out = len(CACHE_INPUTS), len(CACHE_OUTPUTS)
        for layer in range(len(cache) // width_in):
            views = dict(zip(CACHE_INPUTS, cache[layer * width_in:(layer + 1) * width_in]))
            for name, tensor in zip(CACHE_OUTPUTS, new[layer * width_out:(layer + 1) * width_out]):
                views[name].copy_(tensor)
        return logits

    return step


@dataclasses.dataclass
class _Sequence:
    handle: RequestHandle
    params: SamplingParams
    stop_ids: frozenset[int]
    generator: torch.Generator | None
    slot: int = -1
    next_token: int = -1  # the next decode input ...
    position: int = -1  # ... and its position
    generated: int = 0


class SlotGenerator:
    """submit() from any thread; step() (or the thread of start()) admits, prefills, decodes, retires."""

    def __init__(self, step: StepFn, cache: SlotCache, *, max_seq_len: int, max_prompt: int, vocab_size: int,
                 eos_token_id: int | None, device: torch.device | str) -> None:
        capacity = cache.blocks_per_slot * _group_size(cache)
        if max_seq_len > capacity:
            raise ValueError(f"max_seq_len={max_seq_len} exceeds the cache's {capacity} tokens per slot")
        self.step_fn, self.cache = step, cache
        self.max_batch, self.max_seq_len, self.max_prompt = cache.num_slots, max_seq_len, max_prompt
        self.vocab_size, self.eos_token_id, self.device = vocab_size, eos_token_id, torch.device(device)
        self._ids = itertools.count()
        self._lock = threading.Condition()
        self._waiting: collections.deque[_Sequence] = collections.deque()
        self._slots: list[_Sequence | None] = [None] * self.max_batch
        self._thread: threading.Thread | None = None
        self._stopping = False

    def submit(self, prompt_token_ids: Sequence[int], params: SamplingParams) -> RequestHandle:
        prompt = check_prompt(prompt_token_ids, self.vocab_size)
        if len(prompt) > self.max_prompt:
            raise RequestError("prompt_token_ids", f"{len(prompt)} tokens",
                               f"the engine's profile takes prompts of at most {self.max_prompt} tokens")
        total = len(prompt) + params.max_tokens
        if total > self.max_seq_len:
            raise RequestError("max_tokens", params.max_tokens, f"prompt ({len(prompt)} tokens) + max_tokens = "
                                                                f"{total} exceeds max_seq_len={self.max_seq_len}")
        stop_ids = set(params.stop_token_ids)
        if self.eos_token_id is not None and not params.ignore_eos:
            stop_ids.add(int(self.eos_token_id))
        with self._lock:
            if self._stopping:
                raise RuntimeError("the generator is stopping; it accepts no new requests")
            handle = RequestHandle(next(self._ids), prompt)
            self._waiting.append(_Sequence(handle, params, frozenset(stop_ids), new_generator(params, self.device)))
            self._lock.notify_all()
        return handle

    @property
    def has_work(self) -> bool:
        return bool(self._waiting) or any(s is not None for s in self._slots)

    # -- one iteration ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self) -> None:
        with self._lock:
            admitted = self._admit()
        for seq in admitted:
            self._prefill(seq)
        for seq in [s for s in self._slots if s is not None and s.handle.cancelled]:
            self._retire(seq, FinishReason.ABORTED)
        busy = [s for s in self._slots if s is not None]
        if busy:
            self._decode(busy)

    def _admit(self) -> list[_Sequence]:
        admitted = []
        while self._waiting:
            seq = self._waiting[0]
            if seq.handle.cancelled:
                self._waiting.popleft()
                seq.handle._finish(FinishReason.ABORTED)
                continue
            slot = next((i for i, s in enumerate(self._slots) if s is None), None)
            if slot is None:
                break
            self._waiting.popleft()
            seq.slot = slot
            self._slots[slot] = seq
            admitted.append(seq)
        return admitted

    def _prefill(self, seq: _Sequence) -> None:
        self.cache.reset(seq.slot)
        prompt = seq.handle.prompt_token_ids
        if len(prompt) == 1:  # the graph's prefill needs n > 1: a one-token prompt starts as a decode step
            seq.next_token, seq.position = prompt[0], 0
            return
        n = len(prompt)
        ids = torch.tensor([prompt], dtype=torch.int64, device=self.device)
        positions = torch.arange(n, dtype=torch.int64, device=self.device)[None]
        lengths = torch.full((1,), n, dtype=torch.int32, device=self.device)
        logits = self.step_fn(ids, positions, lengths, self.cache.views(seq.slot, seq.slot + 1))
        token = sample_rows(logits[:, -1], [0], [seq.params], [seq.generator])[0]
        seq.position = n
        self._emit(seq, token)

    def _decode(self, busy: list[_Sequence]) -> None:
        tokens = torch.zeros(self.max_batch, 1, dtype=torch.int64)
        positions = torch.zeros(self.max_batch, 1, dtype=torch.int64)
        for slot, seq in enumerate(self._slots):
            if seq is None:
                self.cache.reset(slot)  # idle rows decode token 0 at position 0 into an empty cache
            else:
                tokens[slot, 0], positions[slot, 0] = seq.next_token, seq.position
        lengths = (positions[:, 0] + 1).to(torch.int32)  # not read by a decode step; set for clarity
        logits = self.step_fn(tokens.to(self.device), positions.to(self.device), lengths.to(self.device),
                              self.cache.views(0, self.max_batch))
        picked = sample_rows(logits[:, 0], [s.slot for s in busy], [s.params for s in busy],
                             [s.generator for s in busy])
        for seq, token in zip(busy, picked):
            seq.position += 1
            self._emit(seq, token)

    def _emit(self, seq: _Sequence, token: int) -> None:
        seq.handle._push(token)
        seq.generated += 1
        seq.next_token = token
        if token in seq.stop_ids:
            self._retire(seq, FinishReason.STOP)
        elif seq.generated >= seq.params.max_tokens:
            self._retire(seq, FinishReason.LENGTH)

    def _retire(self, seq: _Sequence, reason: FinishReason) -> None:
        self._slots[seq.slot] = None
        seq.handle._finish(reason)

    # -- background thread ------------------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._stopping = False
                self._thread = threading.Thread(target=self._loop, name="logquant-trt-slots", daemon=True)
                self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop the thread; unfinished requests end as ABORTED, and later submits are refused."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        with self._lock:
            self._thread = None
            for seq in [*self._waiting, *(s for s in self._slots if s is not None)]:
                seq.handle._finish(FinishReason.ABORTED)
            self._waiting.clear()
            self._slots = [None] * self.max_batch

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
            logger.exception("generation loop failed")
            with self._lock:
                self._stopping = True
                for seq in [*self._waiting, *(s for s in self._slots if s is not None)]:
                    seq.handle._fail(error)
                self._waiting.clear()
                self._slots = [None] * self.max_batch
            raise


def _group_size(cache: SlotCache) -> int:
    # dup_mask is [pages, H, G/32]: the block size is 32 mask bits per word.
    return cache.layers[0]["dup_mask"].shape[-1] * 32
