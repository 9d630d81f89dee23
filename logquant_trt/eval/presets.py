# SPDX-License-Identifier: Apache-2.0
"""The rows of the eval table: every policy, compared at equal KV bytes."""

from __future__ import annotations

import dataclasses

from logquant_trt.config import LogQuantConfig
from logquant_trt.eval.budget import match_residual, predicted_bytes_per_token
from logquant_trt.eval.run import PolicyRow


@dataclasses.dataclass(frozen=True)
class Geometry:
    layers: int
    kv_heads: int
    head_dim: int


def table_rows(geometry: Geometry, length: int, prefill_len: int, dtype: str,
               group_size: int = 64, window: int = 64, pool_size: int = 3,
               extra_pool_size: int = 32) -> list[PolicyRow]:
    """fp16, KIVI, KIVI+sink, LogQuant, OTT and LogQuant+OTT.

    LogQuant+OTT sets the byte budget; KIVI's and OTT's residual R are chosen to
    spend at least as many bytes at `length` (docs/kv_format.md §7), so that every
    other row gets at least the combined policy's memory.
    """
    base = LogQuantConfig(dtype=dtype, group_size=group_size, window=window, pool_size=pool_size,
                          extra_pool_size=extra_pool_size)
    combined = base.replace(policy="logquant_ott")
    target = predicted_bytes_per_token(combined, length, prefill_len, geometry.layers,
                                       geometry.kv_heads, geometry.head_dim)

    def matched(config: LogQuantConfig) -> LogQuantConfig:
        return match_residual(config, target, length, prefill_len, geometry.layers,
                              geometry.kv_heads, geometry.head_dim)

    kivi = matched(base.replace(policy="kivi"))
    return [
        PolicyRow("fp16", base.replace(policy="fp16")),
        PolicyRow(f"KIVI R={kivi.residual}", kivi),
        PolicyRow(f"KIVI+sink R={kivi.residual}", kivi.replace(sink_tokens=1)),
        PolicyRow(f"LogQuant W={window}", base.replace(policy="logquant")),
        PolicyRow(f"OTT R={matched(base.replace(policy='ott')).residual}", matched(base.replace(policy="ott"))),
        PolicyRow(f"LogQuant+OTT W={window}", combined),
    ]
