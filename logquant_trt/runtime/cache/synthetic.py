# SPDX-License-Identifier: Apache-2.0
"""Synthetic cache contents for speed benchmarks: every row as if it held `length` tokens.

Prefilling ~90 sequences of 32k tokens through an 8B model takes minutes, and a decode step's speed depends
only on the layout's geometry, not on the values: so the benchmark fills caches directly.

- Paged (2-bit) caches get random codes, positive scales with min = -1.5 * scale (a zero-centred range),
  random full-precision tail and retained entries, and metadata in the policy's steady state for `length`
  tokens: num_sealed and the LogQuant sparse set come from the reference's own position rules
  (`reference.windows`, as a prefill of `length` tokens leaves them), block tables map each row's blocks to
  distinct pages in random order (the pages for the whole max_seq_len, as the engine assigns them), OTT pools
  hold pool_size random sealed positions per (layer, row, head) and the extra pool is full (an upper bound on
  its bytes: with random keys the reference fills it only logarithmically, ~10-15 of 32 entries per head after
  2k tokens), sparse positions that fall in a pool are shadowed, and every readable retained position has its
  dup_mask bit set. Checked on CPU against the reference for every policy: the layout passes the functional
  decode step (reference.paged_step.attention_step), and num_sealed and the sparse region equal a real prefill's.
- Dense (fp16) caches get random K/V and lengths = `length`.
"""

from __future__ import annotations

import torch

from logquant_trt.config import LogQuantConfig
from logquant_trt.reference.paged import PagedLayer, pack_mask_bits
from logquant_trt.reference.windows import LogSparseWindow, RecentWindow
from logquant_trt.runtime.cache.base import KVCache
from logquant_trt.runtime.cache.dense import DenseKVCache
from logquant_trt.runtime.cache.paged import PagedKVCache

SCALE_RANGE = (0.05, 0.45)  # 2-bit step sizes of unit-scale activations
_PACK_PAGES = 1024  # pages per pack_mask_bits call in _dup_mask


def steady_state(config: LogQuantConfig, length: int) -> tuple[int, list[int]]:
    """(num_sealed, LogQuant sparse positions) after a prefill of `length` tokens (docs/kv_format.md §5)."""
    window = LogSparseWindow(config.window) if config.uses_log_window else RecentWindow(config.residual)
    window.prefill(length)
    num_sealed = window.window_start // config.group_size
    return num_sealed, [p for p in window.sparse if p < num_sealed * config.group_size]


def _device_generator(generator: torch.Generator, device: torch.device) -> torch.Generator:
    if generator.device.type == device.type:
        return generator
    seed = int(torch.randint(1 << 62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def _fill_params(params: torch.Tensor, generator: torch.Generator) -> None:
    """(scale, min) pairs in place, with no temporary the size of the tensor."""
    scale, low = params[..., 0], params[..., 1]
    scale.uniform_(*SCALE_RANGE, generator=generator)
    low.copy_(scale).mul_(-1.5)


def _retained_positions(config: LogQuantConfig, layer_idx: int, rows: int, heads: int, num_sealed: int,
                        sparse: list[int], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """retained_pos int32 [rows, heads, S] in the region layout of docs/kv_format.md §4.4."""
    sealed_len = num_sealed * config.group_size
    regions = config.retained_regions()
    slots = config.retained_slots()
    pos = torch.full((rows, heads, slots), -1, dtype=torch.int32, device=device)
    sinks = list(range(min(config.sink_tokens, sealed_len)))
    pos[:, :, :len(sinks)] = torch.tensor(sinks, dtype=torch.int32, device=device)
    sparse = torch.tensor([p for p in sparse if p >= len(sinks)], dtype=torch.int64, device=device)
    sparse_at, pool_at = regions["sinks"], regions["sinks"] + regions["sparse"]
    pool_size = config.pool_size_for_layer(layer_idx)
    chosen = torch.empty(rows, heads, 0, dtype=torch.int64, device=device)
    if pool_size:
        # Candidates: sealed positions that are not pinned (sinks; token 0 under LogQuant).
        first = max(len(sinks), 1 if config.uses_log_window else 0)
        candidates = max(sealed_len - first, 0)
        n_pool = min(pool_size, candidates)
        n_extra = min(regions["extra"], candidates - n_pool)
        if n_pool:
            keys = torch.rand(rows, heads, candidates, generator=generator, device=device)
            chosen = keys.topk(n_pool + n_extra, dim=-1).indices + first
            pool, extra = chosen[..., :n_pool].sort(-1).values, chosen[..., n_pool:].sort(-1).values
            pos[:, :, pool_at:pool_at + n_pool] = pool.to(torch.int32)
            extra_at = pool_at + regions["pool"]
            pos[:, :, extra_at:extra_at + n_extra] = extra.to(torch.int32)
    if len(sparse):
        shadowed = (sparse[None, None, :, None] == chosen[:, :, None, :]).any(-1)  # [rows, heads, W]
        entries = torch.where(shadowed, -sparse - 2, sparse.expand(rows, heads, -1))
        pos[:, :, sparse_at:sparse_at + len(sparse)] = entries.to(torch.int32)
    return pos


def _dup_mask(retained_pos: torch.Tensor, block_table: torch.Tensor, num_pages: int, group_size: int) -> torch.Tensor:
    """int32 [P, H, G/32] with the bit of every readable retained position set in its page."""
    heads = retained_pos.shape[1]
    row, head, slot = (retained_pos >= 0).nonzero(as_tuple=True)
    p = retained_pos[row, head, slot].long()
    masked = torch.zeros(num_pages, heads, group_size, dtype=torch.bool, device=retained_pos.device)
    masked[block_table[row, p // group_size].long(), head, p % group_size] = True
    # pack_mask_bits widens every slot to int64; packing a few pages at a time keeps that temporary small
    # beside a cache that was sized to fill the device.
    return torch.cat([pack_mask_bits(pages) for pages in masked.split(_PACK_PAGES)])


def fill_paged_layers(layers: list[PagedLayer], length: int, generator: torch.Generator) -> None:
    """Fill the layers of one model (index = layer index; one shared block table) as `length` tokens per row."""
    config = layers[0].config
    block_table = layers[0].block_table
    device = block_table.device
    gen = _device_generator(generator, device)
    rows, max_blocks = block_table.shape
    num_pages = layers[0].k_codes.shape[0]
    heads, tail_capacity = layers[0].tail_k.shape[1], layers[0].tail_k.shape[2]
    num_sealed, sparse = steady_state(config, length)
    blocks_per_row = min(max_blocks, num_pages // max(rows, 1))
    if -(-length // config.group_size) > blocks_per_row:
        raise ValueError(f"{length} tokens need {-(-length // config.group_size)} blocks per row; the cache maps "
                         f"{blocks_per_row} ({num_pages} pages for {rows} rows, max_blocks={max_blocks})")
    if length - num_sealed * config.group_size > tail_capacity:
        raise ValueError(f"tail of {length - num_sealed * config.group_size} tokens exceeds T={tail_capacity}")
    order = torch.randperm(num_pages, generator=gen, device=device)[:rows * blocks_per_row]
    block_table.fill_(-1)
    block_table[:, :blocks_per_row] = order.view(rows, blocks_per_row).to(torch.int32)
    for index, layer in enumerate(layers):
        layer.k_codes.random_(generator=gen)  # uint8: every bit pattern
        layer.v_codes.random_(generator=gen)
        _fill_params(layer.k_params, gen)
        _fill_params(layer.v_params, gen)
        for name in ("tail_k", "tail_v", "retained_k", "retained_v"):
            getattr(layer, name).normal_(generator=gen)
        layer.num_sealed.fill_(num_sealed)
        layer.seq_len.fill_(length)
        positions = _retained_positions(config, index, rows, heads, num_sealed, sparse, gen, device)
        layer.retained_pos.copy_(positions)
        layer.dup_mask.copy_(_dup_mask(positions, block_table, num_pages, config.group_size))


def _check_length(cache: KVCache, length: int) -> None:
    if length > cache.max_seq_len:
        raise ValueError(f"length={length} exceeds the cache's max_seq_len={cache.max_seq_len}")


def synthesize_dense(cache: DenseKVCache, length: int, generator: torch.Generator) -> None:
    """Every row of a DenseKVCache as if it held `length` tokens of random K/V."""
    _check_length(cache, length)
    gen = _device_generator(generator, cache.k.device)
    for layer in range(cache.k.shape[0]):  # per layer, so that no step holds more than one layer's temporaries
        cache.k[layer, :, :, :length].normal_(generator=gen)
        cache.v[layer, :, :, :length].normal_(generator=gen)
    cache.lengths.fill_(length)


def synthesize(cache: KVCache, length: int, generator: torch.Generator) -> None:
    """Fill every row of a paged or dense runtime cache as if it held `length` tokens."""
    if isinstance(cache, PagedKVCache):
        _check_length(cache, length)
        fill_paged_layers(cache.layers, length, generator)
    elif isinstance(cache, DenseKVCache):
        synthesize_dense(cache, length, generator)
    else:
        raise TypeError(f"{type(cache).__name__} cannot be synthesized")
