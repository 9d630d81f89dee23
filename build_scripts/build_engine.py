# SPDX-License-Identifier: Apache-2.0
"""`make engine MODEL=...`: export to ONNX, validate in ONNX Runtime, build a TensorRT engine.

Writes to --out: model.onnx (+ external weights), logquant_export.json, engine.plan when TensorRT
is installed, and config.json (plugin name/version/namespace and library, cache geometry,
optimization profile, TensorRT version; "engine": null when the build stopped after the export).

Exit codes: 0 = done (engine built, or TensorRT absent: stopped after a checked export, with a
message saying what to install); 2 = bad input (unsupported architecture, missing weights,
head_dim other than 64/128, bad cache settings), found before any long work; 3 = TensorRT absent
with --require-tensorrt (checked before the export); 4 = the plugin library is missing, or TensorRT
failed to parse or build.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without an install

from logquant_trt.cli import add_export_arguments, export_config  # noqa: E402
from logquant_trt.format import PAGE_TENSOR_NAMES  # noqa: E402

EXIT_BAD_INPUT, EXIT_NO_TENSORRT, EXIT_BUILD_FAILED = 2, 3, 4
PLUGIN_LIBRARY = REPO / "build" / "plugins" / "liblogquant_trt_plugin.so"
TENSORRT_INSTALL_HINT = (
    "Install TensorRT >= 10.3 with its Python bindings (tested headers: 10.14.1), e.g. run this inside "
    "docker/Dockerfile (nvcr.io/nvidia/tensorrt), or `pip install tensorrt` where NVIDIA's index is reachable; "
    "then run `make engine` again")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_export_arguments(parser)
    parser.add_argument("--max-batch", type=int, default=4, help="largest batch of the optimization profile")
    parser.add_argument("--max-seq-len", type=int, default=2048, help="largest sequence (prompt + generated)")
    parser.add_argument("--max-prompt", type=int, default=1024, help="largest prefill")
    parser.add_argument("--plugin", type=Path, default=PLUGIN_LIBRARY, help="liblogquant_trt_plugin.so")
    parser.add_argument("--require-tensorrt", action="store_true",
                        help=f"exit {EXIT_NO_TENSORRT} instead of 0 when TensorRT is absent")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from logquant_trt.export.pipeline import check_inputs, export_checkpoint

    try:
        config = export_config(args)
        check_inputs(args.model, config, args.validate)
        if not 1 <= args.max_prompt <= args.max_seq_len or args.max_batch < 1:
            raise ValueError(f"need 1 <= --max-prompt={args.max_prompt} <= --max-seq-len={args.max_seq_len} "
                             f"and --max-batch={args.max_batch} >= 1")
    except ValueError as error:
        print(f"build_engine: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    tensorrt = _import_tensorrt()
    if tensorrt is None and args.require_tensorrt:
        print(f"build_engine: TensorRT not found (--require-tensorrt). {TENSORRT_INSTALL_HINT}.", file=sys.stderr)
        return EXIT_NO_TENSORRT
    report = export_checkpoint(args.model, args.out, config, args.validate)
    print(f"ONNX: {report.export.onnx_path} (checker passed, {report.export.seconds:.1f} s)")
    if report.max_logit_diff is not None:
        print(f"ONNX Runtime vs PyTorch, prefill + {args.validate} decode steps: largest logit difference "
              f"{report.max_logit_diff:.3g}, greedy tokens {'equal' if report.tokens_equal else 'DIFFER'}")
    metadata = json.loads(report.export.metadata_path.read_text())
    profile = _profile(metadata, args.max_batch, args.max_seq_len, args.max_prompt)
    engine_config = {**metadata, "plugin_library": str(args.plugin), "profile": profile, "engine": None,
                     "tensorrt_version": None}
    if tensorrt is None:
        _write_config(args.out, engine_config)
        plugin_state = "built" if args.plugin.is_file() else "not built yet (`make plugin`)"
        print(f"TensorRT not found: stopped after the export. {TENSORRT_INSTALL_HINT}.\n"
              f"Ready: {report.export.onnx_path} and the plugin {args.plugin} ({plugin_state}); "
              f"{args.out / 'config.json'} records the cache geometry.")
        return 0
    if not args.plugin.is_file():
        print(f"build_engine: plugin library {args.plugin} not found; run `make plugin`", file=sys.stderr)
        return EXIT_BUILD_FAILED
    engine_path = args.out / "engine.plan"
    error = _build(tensorrt, report.export.onnx_path, args.plugin, profile, engine_path)
    if error:
        print(f"build_engine: {error}", file=sys.stderr)
        return EXIT_BUILD_FAILED
    engine_config.update(engine=engine_path.name, tensorrt_version=tensorrt.__version__)
    _write_config(args.out, engine_config)
    print(f"engine: {engine_path}")
    return 0


def _import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError:
        return None
    return tensorrt


def _profile(metadata: dict[str, Any], max_batch: int, max_seq_len: int, max_prompt: int
             ) -> dict[str, dict[str, list[int]]]:
    """min/opt/max of the graph's dynamic dimensions: one profile covers prefill (n > 1) and decode (n == 1)."""
    blocks = -(-max_seq_len // metadata["cache_geometry"]["group_size"])
    dims = {"batch": (1, 1, max_batch), "num_tokens": (1, 1, max_prompt), "max_blocks": (1, blocks, blocks),
            "num_pages": (1, blocks, max_batch * blocks)}
    return {name: dict(zip(("min", "opt", "max"), map(list, zip(*(dims[d] for d in names)))))
            for name, names in _dynamic_inputs(metadata).items()}


def _dynamic_inputs(metadata: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """Input name -> its dynamic dimensions (static ones are read from the graph at build time)."""
    shapes: dict[str, tuple[str, ...]] = {"input_ids": ("batch", "num_tokens"), "position_ids": ("batch", "num_tokens"),
                                          "context_lengths": ("batch",)}
    for name in metadata["inputs"][3:]:
        tensor = name.rsplit(".", 1)[1]
        if tensor in PAGE_TENSOR_NAMES:
            shapes[name] = ("num_pages",)
        elif tensor == "block_table":
            shapes[name] = ("batch", "max_blocks")
        else:
            shapes[name] = ("batch",)
    return shapes


def _build(trt: Any, onnx_path: Path, plugin: Path, profile: dict[str, dict[str, list[int]]],
           engine_path: Path) -> str | None:
    """Build a strongly typed engine with our plugin; returns an error message or None."""
    logger = trt.Logger(trt.Logger.WARNING)
    trt.get_plugin_registry().load_library(str(plugin))
    builder = trt.Builder(logger)
    # Strongly typed: the ONNX's dtypes are the engine's (the only mode of TensorRT 11); int8 codes need it.
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        return "ONNX parse failed: " + "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
    config = builder.create_builder_config()
    # Lets the plugin update the cache in place (docs/plugin.md, "In place").
    config.set_preview_feature(trt.PreviewFeature.ALIASED_PLUGIN_IO_10_03, True)
    shapes = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        bounds = profile[tensor.name]
        static = [d for d in tensor.shape][len(bounds["min"]):]
        shapes.set_shape(tensor.name, *([*bounds[k], *static] for k in ("min", "opt", "max")))
    config.add_optimization_profile(shapes)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        return "TensorRT could not build the engine (see its log above)"
    engine_path.write_bytes(bytes(serialized))
    return None


def _write_config(out: Path, config: dict[str, Any]) -> None:
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
