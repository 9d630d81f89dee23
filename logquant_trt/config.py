# SPDX-License-Identifier: Apache-2.0
"""The one configuration object of a LogQuant KV cache.

Field names are the TensorRT plugin's field names and the ONNX attribute names
(docs/kv_format.md §6), so a config round-trips through every layer unchanged.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from logquant_trt.format import BITS, GROUP_SIZES


class ConfigError(ValueError):
    """A configuration field holds a value the spec does not allow."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        super().__init__(f"LogQuantConfig.{field}={value!r} is invalid: {reason}")
        self.field = field
        self.value = value


class Policy(str, enum.Enum):
    """Which tokens stay in full precision (docs/kv_format.md §5)."""

    FP16 = "fp16"  # no quantization: the baseline
    KIVI = "kivi"  # recent residual of `residual` tokens
    LOGQUANT = "logquant"  # log-thinned sparse set + window of `window`..2*`window` tokens
    OTT = "ott"  # KIVI + per-head pool of smallest-|k|_1 tokens
    LOGQUANT_OTT = "logquant_ott"  # LogQuant window/sparse set + OTT pool


class KeyAxis(str, enum.Enum):
    """The axis along which key groups run."""

    CHANNEL = "channel"  # KIVI: one group per channel over the block's G tokens
    TOKEN = "token"  # LogQuant's released code: per token, groups of C channels


SUPPORTED_BITS = (BITS,)
SUPPORTED_GROUP_SIZES = GROUP_SIZES
SUPPORTED_DTYPES = ("float16", "bfloat16", "float32")


@dataclasses.dataclass(frozen=True)
class LogQuantConfig:
    """Settings of one cache. Validated on construction; errors name the field.

    Attributes:
        policy: retention policy, see `Policy`.
        bits: code width. Only 2 is specified.
        group_size: G, tokens per quantized block (and per key group on the
            channel axis); per-token groups span C = min(G, head_dim) channels.
        residual: R, recent tokens kept in full precision by KIVI and OTT.
        window: W, LogQuant's window; at most 3W tokens stay full precision.
        sink_tokens: the first tokens pinned in full precision for every
            policy (LogQuant pins token 0 regardless).
        pool_size: k, OTT's outlier pool per (layer, sequence, KV head).
        extra_pool_size: OTT's overflow pool for tokens pushed out of the pool.
        pool_skip_layers: the first layers, which get no outlier pool.
        key_axis: axis of the key groups.
        dtype: activation dtype; scales, mins and full-precision tokens are
            stored in it.
    """

    policy: Policy = Policy.LOGQUANT_OTT
    bits: int = 2
    group_size: int = 64
    residual: int = 64
    window: int = 64
    sink_tokens: int = 0
    pool_size: int = 3
    extra_pool_size: int = 32
    pool_skip_layers: int = 2
    key_axis: KeyAxis = KeyAxis.CHANNEL
    dtype: str = "float16"

    def __post_init__(self) -> None:
        # Accept plain strings for the enums (CLI, JSON, plugin fields).
        for name, enum_type in (("policy", Policy), ("key_axis", KeyAxis)):
            raw = getattr(self, name)
            try:
                object.__setattr__(self, name, enum_type(raw))
            except ValueError:
                choices = ", ".join(m.value for m in enum_type)
                raise ConfigError(name, raw, f"must be one of {choices}") from None
        for problem in self.problems():
            raise ConfigError(*problem)

    def problems(self) -> list[tuple[str, Any, str]]:
        """Every (field, value, reason) that breaks the spec; empty when valid."""
        found: list[tuple[str, Any, str]] = []

        def need(ok: bool, field: str, reason: str) -> None:
            if not ok:
                found.append((field, getattr(self, field), reason))

        for field in ("bits", "group_size", "residual", "window", "sink_tokens",
                      "pool_size", "extra_pool_size", "pool_skip_layers"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool):
                found.append((field, value, "must be an int"))
        if found:
            return found
        need(self.bits in SUPPORTED_BITS, "bits", f"must be one of {SUPPORTED_BITS}")
        need(self.group_size in SUPPORTED_GROUP_SIZES, "group_size",
             f"must be one of {SUPPORTED_GROUP_SIZES}")
        need(self.residual >= 0, "residual", "must be >= 0")
        need(self.window >= 1, "window", "must be >= 1")
        need(self.sink_tokens >= 0, "sink_tokens", "must be >= 0")
        need(self.pool_size >= 0, "pool_size", "must be >= 0")
        need(self.extra_pool_size >= 0, "extra_pool_size", "must be >= 0")
        need(self.pool_skip_layers >= 0, "pool_skip_layers", "must be >= 0")
        need(self.dtype in SUPPORTED_DTYPES, "dtype", f"must be one of {SUPPORTED_DTYPES}")
        if self.uses_log_window and self.group_size in SUPPORTED_GROUP_SIZES:
            # Keeps LogQuant's window start on a block boundary, so that sparse
            # positions are always sealed (docs/kv_format.md §5.3).
            need(self.window % self.group_size == 0, "window",
                 f"must be a multiple of group_size={self.group_size} for policy {self.policy.value}")
        return found

    # -- derived geometry ------------------------------------------------------------

    @property
    def quantized(self) -> bool:
        return self.policy is not Policy.FP16

    @property
    def uses_log_window(self) -> bool:
        return self.policy in (Policy.LOGQUANT, Policy.LOGQUANT_OTT)

    @property
    def uses_outlier_pool(self) -> bool:
        return self.policy in (Policy.OTT, Policy.LOGQUANT_OTT) and self.pool_size > 0

    def channel_group(self, head_dim: int) -> int:
        """C: channels per group for per-token quantization."""
        return min(self.group_size, head_dim)

    def pool_size_for_layer(self, layer_idx: int) -> int:
        if not self.uses_outlier_pool or layer_idx < self.pool_skip_layers:
            return 0
        return self.pool_size

    def tail_capacity(self) -> int:
        """T: ring slots for the full-precision tail, a multiple of G.

        After an append and before compaction the window holds at most R + 1
        (KIVI/OTT) or 2W + 1 (LogQuant) tokens, and up to G - 1 older tokens wait
        for their block to fill (docs/kv_format.md §4.3).
        """
        g = self.group_size
        window = 2 * self.window if self.uses_log_window else self.residual
        return -(-(window + g) // g) * g

    def retained_regions(self) -> dict[str, int]:
        """Slots of each region of the retained buffer, in slot order (docs/kv_format.md §4.4)."""
        pool = self.uses_outlier_pool
        return {
            "sinks": self.sink_tokens,
            "sparse": self.window if self.uses_log_window else 0,
            "pool": self.pool_size if pool else 0,
            "extra": self.extra_pool_size if pool else 0,
        }

    def retained_capacity(self) -> int:
        """Retained-buffer slots per (sequence, KV head) that the policy uses."""
        return sum(self.retained_regions().values())

    def retained_slots(self) -> int:
        """S of the retained tensors: retained_capacity(), at least 1 so that no tensor is empty (§4.4)."""
        return max(self.retained_capacity(), 1)

    def check_head_dim(self, head_dim: int) -> None:
        """Raise ConfigError if the cache cannot hold heads of this size."""
        if head_dim <= 0 or head_dim % 4:
            raise ConfigError("group_size", self.group_size,
                              f"head_dim={head_dim} must be a positive multiple of 4")
        if head_dim % self.channel_group(head_dim):
            raise ConfigError("group_size", self.group_size,
                              f"head_dim={head_dim} is not a multiple of min(G, head_dim)")

    def replace(self, **changes: Any) -> "LogQuantConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (v.value if isinstance(v, enum.Enum) else v)
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LogQuantConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(unknown[0], data[unknown[0]], f"unknown field; known: {sorted(known)}")
        return cls(**data)
