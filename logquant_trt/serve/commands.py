# SPDX-License-Identifier: Apache-2.0
"""The `serve` and `triton-repo` subcommands of `logquant-trt` (registered in logquant_trt/cli.py)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from logquant_trt.cache_arguments import add_cache_arguments, cache_config
from logquant_trt.config import SUPPORTED_DTYPES, LogQuantConfig


# -- serve --------------------------------------------------------------------------------------------------


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=None,
                        help="HF checkpoint directory (Llama, Qwen2, Mistral); default: embedded SmolLM2-135M")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--dtype", default=None, choices=SUPPORTED_DTYPES,
                        help="default: float16 on CUDA, float32 on CPU")
    parser.add_argument("--max-batch", type=int, default=16, help="sequences decoded together")
    parser.add_argument("--max-seq-len", type=int, default=1024, help="prompt + generated tokens per sequence")
    parser.add_argument("--backend", default=None, help="cache backend: paged, dense, reference (default: by device)")
    add_cache_arguments(parser)
    server = parser.add_argument_group("Triton (listens on 127.0.0.1 only; port 0 = any free port)")
    server.add_argument("--http-port", type=int, default=8000)
    server.add_argument("--grpc-port", type=int, default=8001)
    server.add_argument("--metrics-port", type=int, default=8002)
    server.add_argument("--instances", type=int, default=None,
                        help="Triton instances of the one-response model (default: --max-batch)")
    server.add_argument("--log-file", type=Path, default=None, help="tritonserver's log (default: stdout)")
    server.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def run_serve(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        import pytriton  # noqa: F401
    except ImportError:
        print("logquant-trt serve: nvidia-pytriton is not installed; `pip install -e .[serve]` "
              "(or the pins in requirements/cpu.txt)", file=sys.stderr)
        return 2
    try:
        engine_kwargs, server_config = _serve_settings(args)
    except ValueError as error:  # bad flags, found before the model loads
        print(f"logquant-trt serve: {error}", file=sys.stderr)
        return 2
    import torch

    from logquant_trt.runtime import GenerationEngine
    from logquant_trt.serve.server import GenerationServer

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        engine = GenerationEngine.from_pretrained(args.model, **engine_kwargs)
        server = GenerationServer(engine, server_config)
    except ValueError as error:
        print(f"logquant-trt serve: {error}", file=sys.stderr)
        return 2
    try:
        server.start()
    except Exception as error:  # noqa: BLE001 - e.g. a port in use: tritonserver exits, PyTriton times out
        print(f"logquant-trt serve: Triton did not start ({type(error).__name__}: {error}); its log says why "
              f"({args.log_file or 'stdout'})", file=sys.stderr)
        return 1
    print(f"serving on http://{server.http_url} and grpc {server.grpc_url} ({server.start_seconds:.1f} s to start); "
          f"metrics {server.metrics_url}\ntry: logquant-trt client --url {server.http_url} \"Hello\"\n"
          f"     logquant-trt client --stream --grpc-url {server.grpc_url} \"Hello\"\n"
          f"stop with Ctrl-C", flush=True)
    server.serve_forever()
    return 0


def _serve_settings(args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    """Engine keyword arguments and the ServerConfig; ValueError naming the flag when one is invalid."""
    import torch

    from logquant_trt.runtime.cache import CacheBackend
    from logquant_trt.serve.processes import resolve_ports
    from logquant_trt.serve.server import ServerConfig

    for flag, value in (("--max-batch", args.max_batch), ("--max-seq-len", args.max_seq_len)):
        if value < 1:
            raise ValueError(f"{flag}={value} is invalid: must be >= 1")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads={args.threads} is invalid: must be >= 1")
    if args.log_file is not None and not args.log_file.parent.is_dir():
        raise ValueError(f"--log-file={str(args.log_file)!r}: its directory does not exist")
    if args.backend is not None:
        try:
            CacheBackend.parse(args.backend)
        except ValueError as error:
            raise ValueError(f"--backend={args.backend!r} is invalid: {error}") from None
    if args.model is not None and not args.model.is_dir():
        raise ValueError(f"--model={str(args.model)!r} is not a directory")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise ValueError(f"--device={args.device!r} is invalid: expected cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device={args.device!r}: CUDA is not available on this machine")
    ports = {"http_port": args.http_port, "grpc_port": args.grpc_port, "metrics_port": args.metrics_port}
    resolve_ports({f"--{k.replace('_', '-')}": v for k, v in ports.items()})  # validates ranges, names the flag
    server_config = ServerConfig(instances=args.instances, log_file=args.log_file, **ports)
    problems = server_config.problems()
    if problems:
        raise ValueError("; ".join(problems))
    # GenerationEngine.from_pretrained owns the dtype default (by device) and gives the cache the model's dtype,
    # so without --dtype the cache flags are checked here in LogQuantConfig's default dtype.
    engine_kwargs = {"cache_config": cache_config(args, args.dtype or LogQuantConfig().dtype), "device": device,
                     "dtype": getattr(torch, args.dtype) if args.dtype else None,
                     "max_batch": args.max_batch, "max_seq_len": args.max_seq_len}
    if args.backend is not None:
        engine_kwargs["backend"] = args.backend
    return engine_kwargs, server_config


# -- triton-repo --------------------------------------------------------------------------------------------


def add_triton_repo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine-dir", type=Path, required=True,
                        help="output of `make engine` (config.json, engine.plan, logquant_export.json)")
    parser.add_argument("--out", type=Path, required=True, help="model repository to write")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="tokenizer directory (default: the embedded SmolLM2's)")
    parser.add_argument("--plugin", type=Path, default=None,
                        help="liblogquant_trt_plugin.so (default: the path in the engine's config.json)")
    parser.add_argument("--max-batch", type=int, default=None, help="default: the engine profile's largest batch")
    parser.add_argument("--max-seq-len", type=int, default=None, help="default: what the engine profile allows")
    parser.add_argument("--gpu", type=int, default=0, help="GPU of the instance (instance_group gpus)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing model directory")


def run_triton_repo(args: argparse.Namespace) -> int:
    from logquant_trt.serve.model_repository import RepositorySettings, write_model_repository

    try:
        settings = RepositorySettings.from_engine_dir(args.engine_dir, tokenizer_dir=args.tokenizer,
                                                      plugin_library=args.plugin, max_batch=args.max_batch,
                                                      max_seq_len=args.max_seq_len, gpu=args.gpu)
        model_dir = write_model_repository(settings, args.out, overwrite=args.force)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"logquant-trt triton-repo: {error}", file=sys.stderr)
        return 2
    print(f"wrote {model_dir}/config.pbtxt and {model_dir}/1/model.py\n"
          f"run: tritonserver --model-repository={args.out.resolve()}  (see docs/serving.md)")
    return 0
