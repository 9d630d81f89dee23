# SPDX-License-Identifier: Apache-2.0
"""`logquant::attention`: the LogQuantAttention plugin (docs/plugin.md) as a torch op.

Inputs, outputs and attributes are the plugin's, one to one and in its order, so that the
ONNX exporter can emit the plugin node straight from this op (logquant_trt.export). The op is
functional: it returns new cache tensors instead of mutating its inputs, which is what
torch.export needs; TensorRT aliases them back in place (`getAliasedInput`).

Eager execution runs the reference (logquant_trt.reference.paged_step) on the CPU, whatever the
inputs' device; the CUDA kernels (logquant_trt.ops.kv_write / decode_attention) are not wired in yet.
"""

from __future__ import annotations

import dataclasses

import torch

from logquant_trt.config import LogQuantConfig
from logquant_trt.format import CACHE_TENSOR_NAMES

PLUGIN_NAME = "LogQuantAttention"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = "logquant"

# Cache inputs 3..15 of the plugin, in order; every one but block_table is also an output.
CACHE_INPUTS = CACHE_TENSOR_NAMES
CACHE_OUTPUTS = tuple(n for n in CACHE_INPUTS if n != "block_table")
# The plugin's 17 inputs, in order: the op's schema, the ONNX schema, the exporter and the ONNX Runtime
# reference all take them from here. Must match kINPUT_NAMES in
# plugins/logquantAttentionPlugin/logquantAttentionContract.cpp; tests/plugins checks that they do.
PLUGIN_INPUTS = ("q", "k", "v", *CACHE_INPUTS, "context_lengths")
# The plugin's fields, in docs/plugin.md's order: LogQuantConfig's fields plus the layer geometry.
CONFIG_FIELDS = ("policy", "bits", "group_size", "residual", "window", "sink_tokens", "pool_size",
                 "extra_pool_size", "pool_skip_layers")
FIELDS = (*CONFIG_FIELDS, "layer_idx", "key_axis", "dtype", "num_q_heads", "num_kv_heads", "head_dim")
STRING_FIELDS = ("policy", "key_axis", "dtype")
PLUGIN_DTYPES = ("float16", "bfloat16")
# Upper bounds the plugin adds to LogQuantConfig's checks (docs/plugin.md, Fields: the kernels' limits).
PLUGIN_MAXIMA = {"residual": 1 << 20, "window": 4096, "sink_tokens": 1 << 20, "pool_size": 64,
                 "extra_pool_size": 512, "pool_skip_layers": 65536}

_SCHEMA = ("(" + ", ".join(f"Tensor {n}" for n in PLUGIN_INPUTS) + ", "
           + ", ".join(f"{'str' if f in STRING_FIELDS else 'int'} {f}" for f in FIELDS)
           + ") -> (" + ", ".join(["Tensor"] * (1 + len(CACHE_OUTPUTS))) + ")")


def plugin_fields(config: LogQuantConfig, layer_idx: int, num_q_heads: int, num_kv_heads: int,
                  head_dim: int) -> dict[str, int | str]:
    """The plugin's field values for one layer, by name."""
    values = config.to_dict()
    fields: dict[str, int | str] = {f: values[f] for f in CONFIG_FIELDS}
    fields.update(layer_idx=layer_idx, key_axis=values["key_axis"], dtype=values["dtype"],
                  num_q_heads=num_q_heads, num_kv_heads=num_kv_heads, head_dim=head_dim)
    return fields


def plugin_config_problems(config: LogQuantConfig) -> list[str]:
    """Why the plugin would refuse this config (its dtype and upper bounds); empty when it accepts it."""
    values = config.to_dict()
    found = [f"{name}={values[name]} exceeds the plugin's maximum {limit}"
             for name, limit in PLUGIN_MAXIMA.items() if values[name] > limit]
    if config.dtype not in PLUGIN_DTYPES:
        found.append(f"dtype={config.dtype!r}: the plugin takes {', '.join(PLUGIN_DTYPES)}")
    return found


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args: torch.Tensor | int | str
               ) -> tuple[torch.Tensor, ...]:
    from logquant_trt.reference.paged import PagedLayer
    from logquant_trt.reference.paged_step import attention_step

    # The reference lays caches out on the CPU (reference.paged.to_paged): run there, hand back on q's device.
    device = q.device
    q, k, v, *args = (a.cpu() if isinstance(a, torch.Tensor) else a for a in (q, k, v, *args))
    cache = dict(zip(CACHE_INPUTS, args[:len(CACHE_INPUTS)]))
    context_lengths = args[len(CACHE_INPUTS)]
    fields = dict(zip(FIELDS, args[len(CACHE_INPUTS) + 1:]))
    config = LogQuantConfig(**{f: fields[f] for f in (*CONFIG_FIELDS, "key_axis", "dtype")})
    # The plugin's codes are int8 (TensorRT has no uint8 plugin I/O); the reference's are uint8, same bytes.
    for name in ("k_codes", "v_codes"):
        cache[name] = cache[name].view(torch.uint8)
    out, new = attention_step(q, k, v, PagedLayer(config, **cache), context_lengths, int(fields["layer_idx"]))
    for name in ("k_codes", "v_codes"):
        setattr(new, name, getattr(new, name).view(torch.int8))
    return tuple(t.to(device) for t in (out, *(getattr(new, n) for n in CACHE_OUTPUTS)))


attention = torch.library.custom_op("logquant::attention", _attention, mutates_args=(), schema=_SCHEMA)


@attention.register_fake
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args: torch.Tensor | int | str) -> tuple[torch.Tensor, ...]:
    cache = dict(zip(CACHE_INPUTS, args[:len(CACHE_INPUTS)]))
    return (torch.empty_like(q), *(torch.empty_like(cache[n]) for n in CACHE_OUTPUTS))


@dataclasses.dataclass
class LayerCache:
    """One layer's 13 cache tensors in the plugin's types (codes int8), in CACHE_INPUTS order."""

    tensors: tuple[torch.Tensor, ...]

    @classmethod
    def empty(cls, config: LogQuantConfig, batch: int, heads: int, head_dim: int, max_blocks: int,
              device: torch.device | str = "cpu") -> "LayerCache":
        from logquant_trt.reference.paged import empty_paged

        paged = empty_paged(config, batch, heads, head_dim, max_blocks, device)
        tensors = [getattr(paged, n) for n in CACHE_INPUTS]
        for i in (CACHE_INPUTS.index("k_codes"), CACHE_INPUTS.index("v_codes")):
            tensors[i] = tensors[i].view(torch.int8)
        return cls(tuple(tensors))

    @classmethod
    def empty_layers(cls, config: LogQuantConfig, num_layers: int, batch: int, heads: int, head_dim: int,
                     max_tokens: int, device: torch.device | str = "cpu") -> list["LayerCache"]:
        """Every layer's zeroed cache for `batch` sequences of up to max_tokens each, identity block tables."""
        max_blocks = -(-max_tokens // config.group_size)
        return [cls.empty(config, batch, heads, head_dim, max_blocks, device) for _ in range(num_layers)]

    def updated(self, outputs: tuple[torch.Tensor, ...]) -> "LayerCache":
        """The cache after a call, from the op's outputs 1.. (block_table carried over)."""
        by_name = dict(zip(CACHE_OUTPUTS, outputs))
        by_name["block_table"] = self.tensors[CACHE_INPUTS.index("block_table")]
        return LayerCache(tuple(by_name[n] for n in CACHE_INPUTS))
