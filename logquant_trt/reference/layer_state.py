# SPDX-License-Identifier: Apache-2.0
"""One layer's mixed KV cache, stored in the spec's format (docs/kv_format.md).

Storage per layer: sealed 2-bit blocks covering [0, Q), the full-precision tail
[Q, L), and the retained buffer holding full-precision copies of sealed tokens
that the policy keeps (their block slots are masked in attention).
"""

from __future__ import annotations

import torch

from logquant_trt.config import LogQuantConfig
from logquant_trt.format import POSITION_BYTES
from logquant_trt.reference.blocks import QuantizedBlocks, dequantize_blocks, seal_block
from logquant_trt.reference.retention import LayerRetention

BLOCK_TABLE_BYTES = 4  # int32 page id per block


class LayerKVState:
    """Cache of one layer for B sequences of equal length.

    Tensors are [B, H, tokens, D]. `retained` maps (b, h) to {position: (k, v)}.
    """

    def __init__(self, config: LogQuantConfig, layer_idx: int) -> None:
        self.config = config
        self.layer_idx = layer_idx
        self.length = 0
        self.num_sealed = 0
        self.blocks: QuantizedBlocks | None = None
        self.tail_k: torch.Tensor | None = None
        self.tail_v: torch.Tensor | None = None
        self.retained: dict[tuple[int, int], dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
        self.policy: LayerRetention | None = None
        self._last_sparse: list[int] | None = None
        self.retained_version = 0  # bumped whenever the retained set changes
        # Dequantized copy of the first blocks: a reference-only speed-up, never counted as storage. It is
        # brought up to `blocks` on read (_dequantized_kv), so callers that never read it never pay for it.
        self._dequantized: tuple[torch.Tensor, torch.Tensor] | None = None

    # -- writes ----------------------------------------------------------------------

    def append(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Append [B, H, n, D] post-RoPE keys and values, then compact.

        The first append of more than one token is the prefill; every later token
        is a decode step for the retention rule.
        """
        if k.shape != v.shape or k.dim() != 4:
            raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must both be [B, H, n, D]")
        expected_dtype = getattr(torch, self.config.dtype)
        if k.dtype != expected_dtype or v.dtype != expected_dtype:
            raise TypeError(f"k/v dtype {k.dtype}/{v.dtype} does not match LogQuantConfig.dtype="
                            f"{self.config.dtype!r}")
        if self.tail_k is None:
            self.config.check_head_dim(k.shape[-1])
            self.policy = LayerRetention(self.config, self.layer_idx, k.shape[0], k.shape[1])
            self.tail_k, self.tail_v = k[:, :, :0], v[:, :, :0]
        elif k.shape[:2] != self.tail_k.shape[:2] or k.shape[-1] != self.tail_k.shape[-1]:
            raise ValueError(f"append of {tuple(k.shape)} does not match the cache's "
                             f"[B, H, *, D] = {tuple(self.tail_k.shape)}")
        self.tail_k = torch.cat([self.tail_k, k], dim=2)
        self.tail_v = torch.cat([self.tail_v, v], dim=2)
        new_tokens = k.shape[2]
        if self.length == 0 and new_tokens > 1:
            self.length = new_tokens
            self.policy.advance(self.length, prefill=True)
        else:
            for _ in range(new_tokens):
                self.length += 1
                self.policy.advance(self.length, prefill=False)
        if self.config.quantized:
            self._compact()

    def _compact(self) -> None:
        """Seal every whole block older than the window; rebuild the retained buffer."""
        g = self.config.group_size
        target = (self.policy.window_start // g) * g
        fresh: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        sparse = self.policy.window.sparse
        while self.num_sealed * g < target:
            start = self.num_sealed * g
            k, v = self.tail_k[:, :, :g], self.tail_v[:, :, :g]
            excluded = self.policy.on_seal(start, k)
            block = seal_block(k, v, excluded, self.config.key_axis, self.config.channel_group(k.shape[-1]))
            self.blocks = block if self.blocks is None else self.blocks.cat(block)
            fresh[start] = (k, v)
            self.tail_k, self.tail_v = self.tail_k[:, :, g:], self.tail_v[:, :, g:]
            self.num_sealed += 1
        # The retained set only changes when a block is sealed or the sparse set is thinned.
        if fresh or sparse is not self._last_sparse:
            self._rebuild_retained(fresh)
            self._last_sparse = sparse

    def _rebuild_retained(self, fresh: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> None:
        g, sealed_end = self.config.group_size, self.num_sealed * self.config.group_size
        batch, heads = self.tail_k.shape[:2]
        for b in range(batch):
            for h in range(heads):
                old = self.retained.get((b, h), {})
                keep: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
                for p in sorted(self.policy.retained(b, h)):
                    if p >= sealed_end:
                        continue  # still in the tail
                    if p in old:
                        keep[p] = old[p]
                    else:
                        start = p - p % g
                        if start not in fresh:
                            raise AssertionError(f"position {p} entered the retained set after its block was sealed")
                        k, v = fresh[start]
                        keep[p] = (k[b, h, p - start], v[b, h, p - start])
                self.retained[(b, h)] = keep
        self.retained_version += 1

    # -- reads -----------------------------------------------------------------------

    @property
    def sealed_length(self) -> int:
        return self.num_sealed * self.config.group_size

    def dequantized_blocks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, H, Q, D] keys and values of the sealed blocks, as attention reads them."""
        dequantized = self._dequantized_kv()
        if dequantized is None:
            empty = self.tail_k[:, :, :0]
            return empty, empty
        return dequantized

    def _dequantized_kv(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The dequantized sealed blocks (None before the first seal), dequantizing only blocks not yet read.

        Dequantization is elementwise, so block by block equals all at once, bit for bit.
        """
        if self.blocks is None:
            return None
        done = 0 if self._dequantized is None else self._dequantized[0].shape[2] // self.config.group_size
        if done < self.blocks.num_blocks:
            unread = QuantizedBlocks(self.blocks.key_axis, *(t[:, done:] for t in self.blocks.tensors()))
            new = dequantize_blocks(unread)
            self._dequantized = new if self._dequantized is None else tuple(
                torch.cat([a, b], dim=2) for a, b in zip(self._dequantized, new))
        return self._dequantized

    def retained_positions(self, b: int, h: int) -> list[int]:
        return sorted(self.retained.get((b, h), {}))

    def effective_kv(self) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, H, L, D]: what attention sees, each position once, in full precision
        where a full-precision copy exists and dequantized otherwise."""
        dequantized = self._dequantized_kv()
        if dequantized is None:
            return self.tail_k, self.tail_v
        k = torch.cat([dequantized[0], self.tail_k], dim=2)
        v = torch.cat([dequantized[1], self.tail_v], dim=2)
        if any(self.retained.values()):
            k, v = k.clone(), v.clone()
            for (b, h), entries in self.retained.items():
                for p, (kp, vp) in entries.items():
                    k[b, h, p], v[b, h, p] = kp, vp
        return k, v

    def full_precision_mask(self) -> torch.Tensor:
        """bool [B, H, L]: positions attention reads in full precision."""
        batch, heads = self.tail_k.shape[:2]
        mask = torch.zeros(batch, heads, self.length, dtype=torch.bool, device=self.tail_k.device)
        mask[:, :, self.sealed_length:] = True
        for (b, h), entries in self.retained.items():
            mask[b, h, list(entries)] = True
        return mask

    def nbytes(self, element_bytes: int = 2) -> dict[str, int]:
        """Storage of this layer as a 16-bit deployment holds it (docs/kv_format.md §7)."""
        if self.tail_k is None:
            return {"codes": 0, "params": 0, "masks": 0, "block_table": 0, "tail": 0, "retained": 0}
        batch, heads, _, d = self.tail_k.shape
        if self.blocks is None:
            codes = params = 0
        else:
            codes = self.blocks.k_codes.numel() + self.blocks.v_codes.numel()
            params = (self.blocks.k_params.numel() + self.blocks.v_params.numel()) * element_bytes
        retained = sum(len(e) for e in self.retained.values())
        return {
            "codes": codes,
            "params": params,
            "masks": self.num_sealed * heads * batch * self.config.group_size // 8,
            "block_table": self.num_sealed * batch * BLOCK_TABLE_BYTES,
            "tail": self.tail_k.shape[2] * batch * heads * 2 * d * element_bytes,
            "retained": retained * (2 * d * element_bytes + POSITION_BYTES),
        }
