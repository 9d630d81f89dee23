# SPDX-License-Identifier: Apache-2.0
"""What the engine's scheduler asks of a model and its KV cache, and the runtime's own implementation.

The scheduler (engine.py) owns requests, rows, pages, sampling and stopping; an Executor owns the
arithmetic: prefill one prompt into a row, decode one token for every row. `ModelExecutor` runs the
runtime's DecoderModel over a `KVCache` backend; logquant_trt.serve.paged_graph_executor runs the
exported graph (a TensorRT engine in Triton, or PagedCausalLM) with the same scheduler.
"""

from __future__ import annotations

import abc

import torch

from logquant_trt.config import LogQuantConfig
from logquant_trt.runtime.cache import CacheBackend, KVCache, default_backend
from logquant_trt.runtime.decode_step import DecodeStep
from logquant_trt.runtime.model import DecoderModel


class Executor(abc.ABC):
    """Rows 0 .. max_batch - 1 of a KV cache and the model that fills them."""

    max_batch: int
    max_seq_len: int
    vocab_size: int
    device: torch.device
    num_pages: int = 0  # the pool the engine hands out; 0 where rows own their memory
    max_prompt: int | None = None  # the longest prefill the executor takes, if below max_seq_len

    def pages_for(self, length: int) -> int:
        """Pages a sequence of `length` tokens needs from the pool."""
        return 0

    @abc.abstractmethod
    def prefill(self, row: int, pages: list[int], prompt: tuple[int, ...]) -> torch.Tensor:
        """Make `row` hold `prompt` (its sealed blocks in `pages`); logits [vocab] of the last prompt token."""

    @abc.abstractmethod
    def decode(self, rows: list[int], tokens: list[int], positions: list[int]) -> torch.Tensor:
        """Feed tokens[i] at positions[i] to rows[i]; every other row idles. Logits [max_batch, vocab]."""

    @abc.abstractmethod
    def release(self, row: int) -> None:
        """Forget the sequence in `row`."""


class ModelExecutor(Executor):
    """DecoderModel + a KVCache backend; decode through DecodeStep (one CUDA graph on the GPU)."""

    def __init__(self, model: DecoderModel, cache_config: LogQuantConfig, *, max_batch: int = 16,
                 max_seq_len: int = 2048, num_pages: int | None = None, backend: CacheBackend | str | None = None,
                 cuda_graphs: bool = True) -> None:
        for name, value in (("max_batch", max_batch), ("max_seq_len", max_seq_len)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if max_seq_len > model.shape.max_positions:
            raise ValueError(f"max_seq_len={max_seq_len} exceeds the model's {model.shape.max_positions} positions")
        if cache_config.dtype != str(model.dtype).removeprefix("torch."):
            raise ValueError(f"cache_config.dtype={cache_config.dtype!r} must match the model dtype {model.dtype}")
        backend = default_backend(cache_config, model.device) if backend is None else CacheBackend.parse(backend)
        cache_cls = backend.load()
        if num_pages is None:
            num_pages = max_batch * cache_cls.pages_for(cache_config, max_seq_len)
        self.model, self.cache_config, self.backend = model, cache_config, backend
        self.max_batch, self.max_seq_len, self.num_pages = max_batch, max_seq_len, num_pages
        self.vocab_size, self.device = model.shape.vocab_size, model.device
        self.cache: KVCache = cache_cls(cache_config, model.shape, max_batch, max_seq_len, num_pages, model.device)
        self._decode = DecodeStep(model, self.cache, cuda_graphs)

    def pages_for(self, length: int) -> int:
        return self.cache.pages_for(self.cache_config, length)

    def prefill(self, row: int, pages: list[int], prompt: tuple[int, ...]) -> torch.Tensor:
        self.cache.assign(row, pages)
        ids = torch.tensor([prompt], dtype=torch.int64, device=self.device)
        positions = torch.arange(len(prompt), device=self.device)[None]

        def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return self.cache.prefill(row, layer, q, k, v)

        return self.model.forward(ids, positions, attend)[0]

    def decode(self, rows: list[int], tokens: list[int], positions: list[int]) -> torch.Tensor:
        self._decode.set_inputs(rows, tokens, positions)
        return self._decode.run()

    def release(self, row: int) -> None:
        self.cache.release(row)
