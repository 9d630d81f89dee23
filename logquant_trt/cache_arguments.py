# SPDX-License-Identifier: Apache-2.0
"""The KV-cache command-line flags shared by `logquant-trt export`, `make engine` and `logquant-trt serve`."""

from __future__ import annotations

import argparse

from logquant_trt.config import LogQuantConfig

# LogQuantConfig field -> (flag, type, help). An unset flag keeps LogQuantConfig's default (or the command's).
_CACHE_FLAGS = {
    "policy": ("--policy", str, "fp16, kivi, logquant, ott, logquant_ott (default)"),
    "group_size": ("--group-size", int, None),
    "window": ("--window", int, "LogQuant W (multiple of the group size)"),
    "residual": ("--residual", int, "KIVI/OTT R"),
    "sink_tokens": ("--sink-tokens", int, None),
    "pool_size": ("--pool-size", int, None),
    "extra_pool_size": ("--extra-pool-size", int, None),
    "pool_skip_layers": ("--pool-skip-layers", int, None),
    "key_axis": ("--key-axis", str, "channel or token"),
}


def add_cache_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("KV cache (default: LogQuantConfig's defaults)")
    for field, (flag, kind, help_text) in _CACHE_FLAGS.items():
        group.add_argument(flag, type=kind, default=None, dest=field, help=help_text)


def cache_config(args: argparse.Namespace, dtype: str) -> LogQuantConfig:
    """LogQuantConfig from the given cache flags; ConfigError (a ValueError naming the field) if invalid."""
    given = {field: getattr(args, field) for field in _CACHE_FLAGS if getattr(args, field) is not None}
    return LogQuantConfig(dtype=dtype, **given)
