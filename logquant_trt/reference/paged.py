# SPDX-License-Identifier: Apache-2.0
"""The byte layout the kernels and the plugin read (docs/kv_format.md §4), built from
reference states, and attention read back from that layout alone.
"""

from __future__ import annotations

import dataclasses

import torch

from logquant_trt.config import KeyAxis, LogQuantConfig
from logquant_trt.format import MASK_WORD_BITS
from logquant_trt.reference.attention import mixed_attention
from logquant_trt.reference.blocks import QuantizedBlocks, dequantize_blocks
from logquant_trt.reference.layer_state import LayerKVState


@dataclasses.dataclass
class PagedLayer:
    """One layer of a batch in the spec's layout. P pages, B sequences, H KV heads."""

    config: LogQuantConfig
    k_codes: torch.Tensor  # uint8 [P, H, D, G/4] (channel axis) or [P, H, G, D/4] (token axis)
    k_params: torch.Tensor  # [P, H, D, 2] or [P, H, G, D/C, 2]; (scale, min) in the cache dtype
    v_codes: torch.Tensor  # uint8 [P, H, G, D/4]
    v_params: torch.Tensor  # [P, H, G, D/C, 2]
    dup_mask: torch.Tensor  # int32 [P, H, G/32]; set bit = slot has a full-precision copy
    block_table: torch.Tensor  # int32 [B, max_blocks]; -1 where unused
    num_sealed: torch.Tensor  # int32 [B]
    seq_len: torch.Tensor  # int32 [B]
    tail_k: torch.Tensor  # [B, H, T, D]; position p at slot p % T
    tail_v: torch.Tensor
    retained_pos: torch.Tensor  # int32 [B, H, S]; -1 = empty slot
    retained_k: torch.Tensor  # [B, H, S, D]
    retained_v: torch.Tensor

    def to(self, device: torch.device | str) -> "PagedLayer":
        return dataclasses.replace(self, **{
            f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self) if f.name != "config"})


def empty_paged(config: LogQuantConfig, batch: int, heads: int, head_dim: int, max_blocks: int,
                device: torch.device | str = "cpu") -> PagedLayer:
    """A zeroed cache of `batch` sequences with an identity block table of max_blocks pages each."""
    g, d, c = config.group_size, head_dim, config.channel_group(head_dim)
    dtype, pages, slots = getattr(torch, config.dtype), batch * max_blocks, config.retained_slots()
    shapes = page_shapes(config.key_axis, heads, g, d, c)

    def zeros(*shape: int, dtype: torch.dtype = dtype) -> torch.Tensor:
        return torch.zeros(shape, dtype=dtype, device=device)

    return PagedLayer(
        config, *(zeros(pages, *shape, dtype=torch.uint8 if i % 2 == 0 else dtype) for i, shape in enumerate(shapes)),
        dup_mask=zeros(pages, heads, g // MASK_WORD_BITS, dtype=torch.int32),
        block_table=torch.arange(pages, dtype=torch.int32, device=device).reshape(batch, max_blocks),
        num_sealed=zeros(batch, dtype=torch.int32), seq_len=zeros(batch, dtype=torch.int32),
        tail_k=zeros(batch, heads, config.tail_capacity(), d), tail_v=zeros(batch, heads, config.tail_capacity(), d),
        retained_pos=torch.full((batch, heads, slots), -1, dtype=torch.int32, device=device),
        retained_k=zeros(batch, heads, slots, d), retained_v=zeros(batch, heads, slots, d))


def pack_mask_bits(bits: torch.Tensor) -> torch.Tensor:
    """bool [..., G] -> int32 [..., G/32], slot i in bit i % 32 of word i // 32."""
    words = bits.reshape(*bits.shape[:-1], -1, MASK_WORD_BITS).to(torch.int64)
    weights = torch.bitwise_left_shift(torch.ones(MASK_WORD_BITS, dtype=torch.int64, device=bits.device),
                                       torch.arange(MASK_WORD_BITS, device=bits.device))
    packed = (words * weights).sum(-1)
    return torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)


def unpack_mask_bits(words: torch.Tensor) -> torch.Tensor:
    """Inverse of pack_mask_bits."""
    shifts = torch.arange(MASK_WORD_BITS, dtype=torch.int64, device=words.device)
    bits = torch.bitwise_right_shift(words.to(torch.int64)[..., None] & 0xFFFFFFFF, shifts) & 1
    return bits.flatten(-2).bool()


def to_paged(states: list[LayerKVState], num_pages: int | None = None,
             generator: torch.Generator | None = None, shuffle: bool = True) -> PagedLayer:
    """Lay out single-sequence states (B = 1 each) as one paged batch, on the CPU.

    Pages are handed out in a random order (shuffle) so that readers must honour the block table; without
    shuffle, in block order and without drawing from any generator.
    """
    config = states[0].config
    for s in states:
        if s.tail_k is None or s.tail_k.shape[0] != 1:
            raise ValueError("to_paged takes non-empty single-sequence states")
    _, heads, _, d = states[0].tail_k.shape
    g, dtype = config.group_size, states[0].tail_k.dtype
    needed = sum(s.num_sealed for s in states)
    num_pages = max(needed, 1) if num_pages is None else num_pages
    if num_pages < needed:
        raise ValueError(f"num_pages={num_pages} < {needed} sealed blocks")
    order = torch.randperm(num_pages, generator=generator) if shuffle else torch.arange(num_pages)
    template = next((s.blocks for s in states if s.blocks is not None), None)
    shapes = page_shapes(config.key_axis, heads, g, d, config.channel_group(d))
    pool = [torch.zeros((num_pages, *shape), dtype=torch.uint8 if i % 2 == 0 else dtype)
            for i, shape in enumerate(shapes)]
    dup_mask = torch.zeros(num_pages, heads, g // MASK_WORD_BITS, dtype=torch.int32)
    max_blocks = max(1, max(s.num_sealed for s in states))
    block_table = torch.full((len(states), max_blocks), -1, dtype=torch.int32)
    t_cap, s_cap = config.tail_capacity(), config.retained_slots()
    tail_k = torch.zeros(len(states), heads, t_cap, d, dtype=dtype)
    tail_v = torch.zeros_like(tail_k)
    ret_pos = torch.full((len(states), heads, s_cap), -1, dtype=torch.int32)
    ret_k = torch.zeros(len(states), heads, s_cap, d, dtype=dtype)
    ret_v = torch.zeros_like(ret_k)
    next_page = 0
    for b, s in enumerate(states):
        for n in range(s.num_sealed):
            page = int(order[next_page])
            next_page += 1
            block_table[b, n] = page
            for dst, src in zip(pool, s.blocks.tensors()):
                dst[page] = src[0, n]
            masked = torch.zeros(heads, g, dtype=torch.bool)
            for h in range(heads):
                for p in s.retained_positions(0, h):
                    if n * g <= p < (n + 1) * g:
                        masked[h, p - n * g] = True
            dup_mask[page] = pack_mask_bits(masked)
        tail_len = s.length - s.sealed_length
        if tail_len > t_cap:
            raise ValueError(f"tail of {tail_len} tokens exceeds tail_capacity()={t_cap}")
        slots = tail_slots(s.sealed_length, s.length, t_cap)
        tail_k[b, :, slots], tail_v[b, :, slots] = s.tail_k[0].cpu(), s.tail_v[0].cpu()
        for h in range(heads):
            _fill_retained_regions(s, h, ret_pos[b, h], ret_k[b, h], ret_v[b, h])
    return PagedLayer(
        config, *pool, dup_mask=dup_mask, block_table=block_table,
        num_sealed=torch.tensor([s.num_sealed for s in states], dtype=torch.int32),
        seq_len=torch.tensor([s.length for s in states], dtype=torch.int32),
        tail_k=tail_k, tail_v=tail_v, retained_pos=ret_pos, retained_k=ret_k, retained_v=ret_v)


def tail_slots(start: int, end: int, capacity: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Ring slots of tail positions [start, end): position p lives in slot p % T (§4.3)."""
    return torch.arange(start, end, device=device) % capacity


def encode_shadowed(position: int) -> int:
    """A sparse-region entry whose copy lives in the pool or extra region."""
    return -position - 2


def _fill_retained_regions(state: LayerKVState, h: int, pos: torch.Tensor,
                           k: torch.Tensor, v: torch.Tensor) -> None:
    regions = state.policy.regions(0, h)
    copies = state.retained.get((0, h), {})
    elsewhere = set(regions["pool"]) | set(regions["extra"])
    offset = 0
    for name, capacity in state.config.retained_regions().items():
        entries = [p for p in regions[name] if p < state.sealed_length]
        if len(entries) > capacity:
            raise AssertionError(f"{len(entries)} positions in retained region {name!r} of {capacity} slots")
        for i, p in enumerate(entries):
            if name == "sparse" and p in elsewhere:
                pos[offset + i] = encode_shadowed(p)
                continue
            pos[offset + i] = p
            k[offset + i], v[offset + i] = copies[p]
        offset += capacity


def page_shapes(axis: KeyAxis, heads: int, g: int, d: int, c: int) -> list[tuple[int, ...]]:
    """Per-page shapes of k_codes, k_params, v_codes, v_params (without the leading P)."""
    k_codes = (heads, d, g // 4) if axis is KeyAxis.CHANNEL else (heads, g, d // 4)
    k_params = (heads, d, 2) if axis is KeyAxis.CHANNEL else (heads, g, d // c, 2)
    return [k_codes, k_params, (heads, g, d // 4), (heads, g, d // c, 2)]


def paged_attention(q: torch.Tensor, paged: PagedLayer, scale: float | None = None) -> torch.Tensor:
    """Decode attention of sequence b's newest n tokens, q [B, Hq, n, D], read from the layout."""
    outputs = []
    config, g = paged.config, paged.config.group_size
    for b in range(q.shape[0]):
        sealed, length = int(paged.num_sealed[b]), int(paged.seq_len[b])
        pages = paged.block_table[b, :sealed].long()
        blocks = QuantizedBlocks(config.key_axis, *(t[pages].unsqueeze(0) for t in (
            paged.k_codes, paged.k_params, paged.v_codes, paged.v_params)))
        quant_k, quant_v = dequantize_blocks(blocks)
        masked = unpack_mask_bits(paged.dup_mask[pages])  # [n, H, G]
        masked = masked.permute(1, 0, 2).reshape(1, masked.shape[1], sealed * g)
        slots = tail_slots(sealed * g, length, paged.tail_k.shape[2], q.device)
        valid = paged.retained_pos[b:b + 1] >= 0
        outputs.append(mixed_attention(
            q[b:b + 1], quant_k, quant_v, masked,
            paged.retained_k[b:b + 1], paged.retained_v[b:b + 1], valid,
            paged.tail_k[b:b + 1, :, slots], paged.tail_v[b:b + 1, :, slots], scale))
    return torch.cat(outputs)
