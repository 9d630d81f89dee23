# SPDX-License-Identifier: Apache-2.0
"""`logquant-trt bench prefill`: what quantize-on-write adds to an fp16 prefill.

Baseline, measured in the same run: one Llama decoder layer (random weights, fp16,
SDPA attention) running a prefill of B x L tokens. Ours: the same layer plus the
bulk quantize of its K/V into the 2-bit cache (logquant::quantize_prefill).
Prints JSON; the ratio is what counts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    from logquant_trt.bench.kernels import time_us
    from logquant_trt.config import LogQuantConfig
    from logquant_trt.ops.kv_write import quantize_prefill
    from logquant_trt.reference.paged import empty_paged

    parser = argparse.ArgumentParser(prog="logquant-trt bench prefill", description=__doc__)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--policies", nargs="+", default=["kivi", "logquant_ott"])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--output_path", type=Path, default=None)
    args = parser.parse_args(argv)

    device = torch.device("cuda")
    no_flush = torch.empty(1, device=device)  # a prefill is far larger than L2

    def median_us(fn) -> tuple[float, float]:
        return time_us(fn, args.iters, args.warmup, no_flush)

    torch.manual_seed(0)
    # Llama-3-8B layer shape.
    cfg = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8,
                      head_dim=128, attn_implementation="sdpa")
    layer = LlamaDecoderLayer(cfg, layer_idx=2).to(device, torch.float16).eval()
    rope = LlamaRotaryEmbedding(cfg).to(device)
    results = []
    for length in args.lengths:
        hidden = torch.randn(args.batch, length, cfg.hidden_size, device=device, dtype=torch.float16)
        positions = torch.arange(length, device=device)[None].expand(args.batch, -1)
        embeddings = tuple(x.half() for x in rope(hidden, positions))

        @torch.no_grad()
        def fp16_prefill() -> None:
            layer(hidden, position_embeddings=embeddings, attention_mask=None)

        base_us, base_std = median_us(fp16_prefill)
        k = torch.randn(args.batch, cfg.num_key_value_heads, length, cfg.head_dim, device=device,
                        dtype=torch.float16)
        v = torch.randn_like(k)
        lengths = torch.full((args.batch,), length, dtype=torch.int32, device=device)
        for policy in args.policies:
            config = LogQuantConfig(policy=policy, group_size=64, residual=64, window=64, dtype="float16")
            paged = empty_paged(config, args.batch, cfg.num_key_value_heads, cfg.head_dim,
                                max_blocks=length // config.group_size, device=device)
            quant_us, quant_std = median_us(lambda: quantize_prefill(paged, k, v, lengths, layer_idx=2))
            results.append({"batch": args.batch, "length": length, "policy": policy,
                            "fp16_layer_prefill_us": base_us, "fp16_layer_prefill_std_us": base_std,
                            "quantize_on_write_us": quant_us, "quantize_on_write_std_us": quant_std,
                            "overhead": quant_us / base_us})
    payload = {"routine": "prefill", "device": torch.cuda.get_device_name(), "shape": "Llama-3-8B layer",
               "results": results}
    print(json.dumps(payload, indent=2))
    if args.output_path:
        args.output_path.parent.mkdir(parents=True, exist_ok=True)
        args.output_path.write_text(json.dumps(payload, indent=2))
    return 0
