# SPDX-License-Identifier: Apache-2.0
"""KV bytes per token of a policy, and settings that match a byte budget.

Measured figures come from the caches themselves (LayerKVState.nbytes); this
module predicts them from positions alone, to choose KIVI's R (or any policy's
size) for a comparison at equal bytes (docs/kv_format.md §7).
"""

from __future__ import annotations

from logquant_trt.config import LogQuantConfig
from logquant_trt.reference.retention import LayerRetention

ELEMENT_BYTES = 2  # a 16-bit deployment


def fp16_bytes_per_token(layers: int, kv_heads: int, head_dim: int) -> float:
    return layers * kv_heads * 2 * head_dim * ELEMENT_BYTES


def predicted_bytes_per_token(config: LogQuantConfig, length: int, prefill_len: int,
                              layers: int, kv_heads: int, head_dim: int,
                              pool_tokens: float | None = None) -> float:
    """Storage after prefill_len tokens of prefill and decode up to `length`.

    Outlier pools depend on the data: `pool_tokens` is their mean occupancy per
    (layer with a pool, head), full (pool + extra pool) when None.
    """
    if not config.quantized:
        return fp16_bytes_per_token(layers, kv_heads, head_dim)
    retention = LayerRetention(config.replace(pool_size=0), layer_idx=0, batch=1, heads=1)
    retention.advance(prefill_len, prefill=True)
    for t in range(prefill_len + 1, length + 1):
        retention.advance(t, prefill=False)
    g, d, e = config.group_size, head_dim, ELEMENT_BYTES
    sealed = retention.window_start // g
    c = config.channel_group(d)
    key_params = d if config.key_axis.value == "channel" else g * d // c
    per_head = (sealed * g * d // 2 + sealed * (key_params + g * d // c) * 2 * e + sealed * g // 8
                + (length - sealed * g) * 2 * d * e)
    positional = {p for p in retention.retained(0, 0) if p < sealed * g}
    total = 0.0
    for layer in range(layers):
        pool_size = config.pool_size_for_layer(layer)
        full = pool_size + config.extra_pool_size if pool_size else 0
        pool = min(full if pool_tokens is None or not pool_size else pool_tokens, sealed * g)
        total += kv_heads * (per_head + (len(positional) + pool) * (2 * d * e + 4)) + sealed * 4
    return total / length


def match_residual(config: LogQuantConfig, target_bytes_per_token: float, length: int,
                   prefill_len: int, layers: int, kv_heads: int, head_dim: int,
                   pool_tokens: float | None = None) -> LogQuantConfig:
    """The residual R whose predicted bytes are closest to the target (bytes grow with R)."""
    def bytes_at(residual: int) -> float:
        return predicted_bytes_per_token(config.replace(residual=residual), length, prefill_len,
                                         layers, kv_heads, head_dim, pool_tokens)

    low, high = 0, length
    while low < high:
        mid = (low + high) // 2
        if bytes_at(mid) >= target_bytes_per_token:
            high = mid
        else:
            low = mid + 1
    if low > 0 and target_bytes_per_token - bytes_at(low - 1) < bytes_at(low) - target_bytes_per_token:
        low -= 1
    return config.replace(residual=low)
