# SPDX-License-Identifier: Apache-2.0
"""`logquant-trt`: demo, eval, benchmarks, ONNX export and serving."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from logquant_trt.cache_arguments import add_cache_arguments, cache_config
from logquant_trt.config import LogQuantConfig


def _add_eval_arguments(parser: argparse.ArgumentParser, num_tokens: int, prefill: int,
                        gen_tokens: int) -> None:
    parser.add_argument("--model", default=None,
                        help="HF checkpoint directory (Llama, Qwen2, Mistral); default: embedded SmolLM2-135M")
    parser.add_argument("--num-tokens", type=int, default=num_tokens, help="evaluated text length")
    parser.add_argument("--prefill", type=int, default=prefill, help="prefill length; the rest decodes")
    parser.add_argument("--gen-context", type=int, default=1024)
    parser.add_argument("--gen-tokens", type=int, default=gen_tokens)
    parser.add_argument("--group-size", type=int, default=32)
    parser.add_argument("--window", type=int, default=32, help="LogQuant W (multiple of the group size)")
    parser.add_argument("--pool-size", type=int, default=3)
    parser.add_argument("--extra-pool-size", type=int, default=32)
    parser.add_argument("--output-dir", type=Path, default=Path("results/eval"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def _run_eval(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from logquant_trt.data.corpus import corpus_token_ids
    from logquant_trt.eval.presets import TableSettings, run_table
    from logquant_trt.eval.report import plot_perplexity_vs_bytes, print_table, write_json
    from logquant_trt.eval.run import EvalSettings, Evaluator
    from logquant_trt.models.checkpoint import load_model
    from logquant_trt.models.embedded import load_embedded_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model) if args.model else load_embedded_model()
    settings = EvalSettings(num_tokens=args.num_tokens, prefill_len=args.prefill,
                            gen_context=min(args.gen_context, args.num_tokens), gen_tokens=args.gen_tokens)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    table = TableSettings(dtype=dtype, group_size=args.group_size, window=args.window,
                          pool_size=args.pool_size, extra_pool_size=args.extra_pool_size)
    evaluator = Evaluator(model, corpus_token_ids(tokenizer, args.num_tokens), settings)
    results = run_table(evaluator, table)
    cfg = model.config
    title = (f"{Path(cfg.name_or_path or 'model').name}: {args.num_tokens} tokens of pydoc topics, "
             f"prefill {args.prefill}, G={args.group_size}")
    print_table(results, title)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_json(results, settings, args.output_dir / "eval.json")
    plot_perplexity_vs_bytes(results, args.output_dir / "perplexity_vs_bytes.png", title)
    print(f"wrote {args.output_dir / 'eval.json'} and {args.output_dir / 'perplexity_vs_bytes.png'}")
    return 0


def _run_bench(args: argparse.Namespace, rest: list[str]) -> int:
    if args.routine == "kernels":
        from logquant_trt.bench.kernels import main as routine
    elif args.routine == "e2e":
        from logquant_trt.bench.e2e import main as routine
    else:
        from logquant_trt.bench.prefill import main as routine
    return routine(rest) or 0


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=None,
                        help="HF checkpoint directory (Llama, Qwen2, Mistral); default: embedded SmolLM2-135M")
    parser.add_argument("--out", type=Path, required=True, help="output directory (model.onnx, logquant_export.json)")
    add_cache_arguments(parser)
    parser.set_defaults(group_size=32, window=32)  # the embedded model's export; otherwise LogQuantConfig's
    parser.add_argument("--dtype", default="float16", help="cache/attention dtype: float16 or bfloat16")
    parser.add_argument("--validate", type=int, default=8, metavar="STEPS",
                        help="decode steps compared with PyTorch in ONNX Runtime after the prefill (0: skip)")


def export_config(args: argparse.Namespace) -> LogQuantConfig:
    return cache_config(args, args.dtype)


def _run_export(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from logquant_trt.export.pipeline import check_inputs, export_checkpoint

    try:
        config = export_config(args)
        check_inputs(args.model, config, args.validate)  # bad input is refused before any long work
        report = export_checkpoint(args.model, args.out, config, args.validate)
    except ValueError as error:
        print(f"logquant-trt export: {error}", file=sys.stderr)
        return 2
    print(f"wrote {report.export.onnx_path} and {report.export.metadata_path} in {report.export.seconds:.1f} s")
    if report.max_logit_diff is not None:
        print(f"ONNX Runtime vs PyTorch over a prefill and {args.validate} decode steps: largest logit "
              f"difference {report.max_logit_diff:.3g}, greedy tokens {'equal' if report.tokens_equal else 'DIFFER'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="logquant-trt", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="short eval of every policy on the embedded model")
    _add_eval_arguments(demo, num_tokens=2048, prefill=256, gen_tokens=16)
    evaluate = commands.add_parser("eval", help="perplexity/KL/agreement/bytes of every policy")
    _add_eval_arguments(evaluate, num_tokens=4096, prefill=512, gen_tokens=32)
    bench = commands.add_parser("bench", help="benchmarks (extra arguments go to the routine)")
    bench.add_argument("routine", choices=["kernels", "prefill", "e2e"])
    commands.add_parser("check-runtime", add_help=False,
                        help="GPU runtime perplexity vs the CPU reference (extra arguments go to the routine)")
    export = commands.add_parser("export", help="ONNX graph with the LogQuantAttention plugin node")
    add_export_arguments(export)
    from logquant_trt.serve import client as serve_client
    from logquant_trt.serve import commands as serve_commands

    serve = commands.add_parser("serve", help="Triton Inference Server (PyTriton) with a text-generation model")
    serve_commands.add_serve_arguments(serve)
    client = commands.add_parser("client", help="send a prompt to `logquant-trt serve` with tritonclient")
    serve_client.add_arguments(client)
    triton_repo = commands.add_parser("triton-repo", help="Triton model repository for a `make engine` TensorRT engine")
    serve_commands.add_triton_repo_arguments(triton_repo)
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        return _run_bench(args, rest)
    if args.command == "check-runtime":
        from logquant_trt.eval.runtime_check import main as check_runtime

        return check_runtime(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "export":
        return _run_export(args)
    if args.command in ("serve", "client", "triton-repo"):
        return {"serve": serve_commands.run_serve, "client": serve_client.run,
                "triton-repo": serve_commands.run_triton_repo}[args.command](args)
    return _run_eval(args)


if __name__ == "__main__":
    sys.exit(main())
