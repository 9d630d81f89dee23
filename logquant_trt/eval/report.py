# SPDX-License-Identifier: Apache-2.0
"""The eval table (terminal), JSON and PNG plot."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from logquant_trt.eval.run import PolicyResult


def print_table(results: list[PolicyResult], title: str, console: Console | None = None) -> None:
    table = Table(title=title)
    for column in ("policy", "perplexity", "× fp16", "KL", "top-1 agree", "greedy match",
                   "bytes/token", "compression", "fp tokens/head"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for r in results:
        table.add_row(r.name, f"{r.perplexity:.3f}", f"{r.ppl_ratio:.3f}", f"{r.kl_divergence:.4f}",
                      f"{r.top1_agreement:.3f}", f"{r.greedy_match:.2f} ({r.greedy_prefix})",
                      f"{r.bytes_per_token:.0f}", f"{r.compression:.2f}×", f"{r.full_precision_tokens:.0f}")
    (console or Console(width=160)).print(table)


def write_json(results: list[PolicyResult], settings: Any, path: Path) -> None:
    payload = {"settings": dataclasses.asdict(settings), "results": [dataclasses.asdict(r) for r in results]}
    path.write_text(json.dumps(payload, indent=2))


def plot_perplexity_vs_bytes(results: list[PolicyResult], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        ax.scatter(r.bytes_per_token, r.perplexity, s=40)
        ax.annotate(r.name, (r.bytes_per_token, r.perplexity), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("KV bytes per token (all layers, 16-bit deployment)")
    ax.set_ylabel("perplexity")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
