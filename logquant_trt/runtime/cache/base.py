# SPDX-License-Identifier: Apache-2.0
"""The contract between the generation engine and a KV cache backend.

A cache holds `rows` sequence slots for every layer. The engine assigns a row (and pages) to a
sequence, prefills it alone, then decodes all rows together: decode always runs the full width,
with empty rows carried along, so that every shape is static (one CUDA graph) and each row's
arithmetic does not depend on which other rows are busy.
"""

from __future__ import annotations

import abc

import torch

from logquant_trt.config import LogQuantConfig
from logquant_trt.runtime.model import DecoderShape


class KVCache(abc.ABC):
    """One model's KV cache: `rows` slots of up to max_seq_len tokens each."""

    #: The decode path reads lengths and positions on the device only (CUDA-graph capturable).
    graph_safe: bool = False

    def __init__(self, config: LogQuantConfig, shape: DecoderShape, rows: int, max_seq_len: int, num_pages: int,
                 device: torch.device) -> None:
        self.config, self.shape, self.rows, self.max_seq_len = config, shape, rows, max_seq_len
        self.num_pages, self.device = num_pages, device
        self.dtype = getattr(torch, config.dtype)

    # -- sizing (class level, so capacity can be planned before allocating) -----------------------------------

    @classmethod
    def bytes_per_row(cls, config: LogQuantConfig, shape: DecoderShape, max_seq_len: int) -> int:
        """Device bytes every row holds whether busy or not (all layers)."""
        return 0

    @classmethod
    def bytes_per_page(cls, config: LogQuantConfig, shape: DecoderShape) -> int:
        """Device bytes of one page id (all layers); 0 for caches without pages."""
        return 0

    @classmethod
    def pages_for(cls, config: LogQuantConfig, length: int) -> int:
        """Pages a sequence of `length` tokens may seal."""
        return 0

    # -- sequence slots ----------------------------------------------------------------------------------------

    @abc.abstractmethod
    def assign(self, row: int, pages: list[int]) -> None:
        """Make `row` an empty sequence whose sealed blocks go to `pages`, in order."""

    def release(self, row: int) -> None:
        """Forget `row`'s sequence (its pages go back to the engine's allocator)."""
        self.assign(row, [])

    @abc.abstractmethod
    def prefill(self, row: int, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Causal attention of a whole prompt (q [1, Hq, n, D], k/v [1, H, n, D], post-RoPE) over itself,
        and the prompt written into `row`'s (empty) cache."""

    @abc.abstractmethod
    def begin_decode(self, active: torch.Tensor, active_rows: list[int]) -> None:
        """Before a decode step: `active` int32 [rows] on the device (1 = busy row); empty rows are reset.

        active_rows is the same on the host, for backends that are not graph-safe.
        """

    @abc.abstractmethod
    def decode(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Append one token per row (k/v [rows, H, 1, D]) and attend (q [rows, Hq, 1, D]) -> [rows, Hq, 1, D]."""

    def nbytes(self) -> int:
        """Device bytes this cache allocated."""
        return self.rows * self.bytes_per_row(self.config, self.shape, self.max_seq_len) + \
            self.num_pages * self.bytes_per_page(self.config, self.shape)


def block_bound(config: LogQuantConfig, length: int) -> int:
    """Pages a quantized sequence of `length` tokens may need: its sealed blocks never pass the last
    whole block, and the kernels may map one block ahead."""
    return -(-length // config.group_size) if config.quantized else 0


def causal_self_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """A prompt's attention over its own unquantized K/V (docs/kv_format.md §5): SDPA, GQA-aware."""
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
