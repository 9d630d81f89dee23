# SPDX-License-Identifier: Apache-2.0
"""The eval table: every policy, compared at equal KV bytes per token."""

from __future__ import annotations

import dataclasses

from rich.progress import Progress

from logquant_trt.config import LogQuantConfig
from logquant_trt.eval.budget import match_residual
from logquant_trt.eval.run import Evaluator, PolicyResult, PolicyRow

DISPLAY_ORDER = ("fp16", "KIVI", "KIVI+sink", "LogQuant", "OTT", "LogQuant+OTT")


@dataclasses.dataclass(frozen=True)
class TableSettings:
    dtype: str
    group_size: int = 32
    window: int = 32
    pool_size: int = 3
    extra_pool_size: int = 32


def run_table(evaluator: Evaluator, table: TableSettings) -> list[PolicyResult]:
    """fp16, KIVI, KIVI+sink (token 0 pinned), LogQuant, OTT and LogQuant+OTT.

    LogQuant+OTT runs first and sets the budget: KIVI's and OTT's residual R is the
    one whose bytes per token at the end of the text come closest to its measured
    bytes (OTT's pools predicted at LogQuant+OTT's measured occupancy). LogQuant alone
    keeps the same W and so spends less (it has no pool).
    """
    base = LogQuantConfig(dtype=table.dtype, group_size=table.group_size, window=table.window,
                          pool_size=table.pool_size, extra_pool_size=table.extra_pool_size)
    e, s = evaluator, evaluator.settings

    def matched(policy: str, target: float, pool_tokens: float | None) -> LogQuantConfig:
        return match_residual(base.replace(policy=policy), target, s.num_tokens, s.prefill_len,
                              e.layers, e.kv_heads, e.head_dim, pool_tokens)

    by_name: dict[str, PolicyResult] = {}
    with Progress() as progress:
        task = progress.add_task("eval", total=len(DISPLAY_ORDER))

        def run(name: str, label: str, config: LogQuantConfig) -> PolicyResult:
            progress.update(task, description=f"eval {label}")
            by_name[name] = e.run(PolicyRow(label, config))
            progress.advance(task)
            return by_name[name]

        run("fp16", "fp16", base.replace(policy="fp16"))
        combined = run("LogQuant+OTT", f"LogQuant+OTT W={table.window}", base.replace(policy="logquant_ott"))
        run("LogQuant", f"LogQuant W={table.window}", base.replace(policy="logquant"))
        kivi = matched("kivi", combined.bytes_per_token, None)
        run("KIVI", f"KIVI R={kivi.residual}", kivi)
        run("KIVI+sink", f"KIVI+sink R={kivi.residual}", kivi.replace(sink_tokens=1))
        ott = matched("ott", combined.bytes_per_token, combined.pool_tokens)
        run("OTT", f"OTT R={ott.residual}", ott)
    return [by_name[name] for name in DISPLAY_ORDER]
