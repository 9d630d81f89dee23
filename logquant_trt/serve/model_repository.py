# SPDX-License-Identifier: Apache-2.0
"""`logquant-trt triton-repo`: a Triton model repository serving the TensorRT engine of `make engine`.

Writes <out>/logquant_trt_engine/config.pbtxt (a decoupled Python-backend model on one GPU, with the
inputs and outputs of protocol.py and the engine's paths and limits as parameters) and
<out>/logquant_trt_engine/1/model.py (a copy of trt_python_model.py). Why the Python backend and
not Triton's TensorRT backend: each generation step needs our cache bookkeeping (slots, positions,
sampling) around the engine, and the TensorRT backend only runs one engine call per request.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from logquant_trt.serve import trt_python_model
from logquant_trt.serve.protocol import INPUTS, OUTPUTS, TRT_MODEL_NAME, TensorSpec

ENGINE_CONFIG = "config.json"  # written by build_scripts/build_engine.py
# protocol dtype -> config.pbtxt data_type (Triton calls BYTES "TYPE_STRING" in model configs)
PBTXT_TYPES = {"BYTES": "TYPE_STRING", "INT64": "TYPE_INT64", "INT32": "TYPE_INT32", "FP32": "TYPE_FP32",
               "BOOL": "TYPE_BOOL"}


@dataclasses.dataclass(frozen=True)
class RepositorySettings:
    """What config.pbtxt records: absolute paths, so tritonserver may start from any directory."""

    engine_path: Path
    engine_config: Path
    plugin_library: Path
    tokenizer_dir: Path
    cache_config: dict[str, Any]
    max_batch: int
    max_seq_len: int
    max_prompt: int
    gpu: int = 0
    model_name: str = TRT_MODEL_NAME

    @classmethod
    def from_engine_dir(cls, engine_dir: Path, *, tokenizer_dir: Path | None = None,
                        plugin_library: Path | None = None, max_batch: int | None = None,
                        max_seq_len: int | None = None, gpu: int = 0) -> "RepositorySettings":
        """Read engine_dir/config.json; ValueError naming the value when a setting exceeds the engine's profile."""
        engine_dir = Path(engine_dir).resolve()
        config_path = engine_dir / ENGINE_CONFIG
        if not config_path.is_file():
            raise FileNotFoundError(f"{config_path} not found: --engine-dir must be the output of `make engine`")
        config = json.loads(config_path.read_text())
        if not config.get("engine"):
            raise ValueError(f"{config_path} records no engine (TensorRT was absent when `make engine` ran); "
                             f"build the engine where TensorRT is installed (docs/export.md)")
        engine_path = engine_dir / config["engine"]
        if not engine_path.is_file():
            raise FileNotFoundError(f"engine file {engine_path} (named in {config_path}) not found")
        plugin = Path(plugin_library or config["plugin_library"]).resolve()
        if not plugin.is_file():
            raise FileNotFoundError(f"plugin library {plugin} not found (--plugin, or the path in {config_path})")
        if gpu < 0:
            raise ValueError(f"gpu={gpu} is invalid: must be a device index >= 0")
        if tokenizer_dir is None:
            from logquant_trt.models.embedded import ensure_embedded_model

            tokenizer_dir = ensure_embedded_model()
        limits = engine_limits(config)
        max_batch = limits["max_batch"] if max_batch is None else max_batch
        max_seq_len = limits["max_seq_len"] if max_seq_len is None else max_seq_len
        for name, value in (("max_batch", max_batch), ("max_seq_len", max_seq_len)):
            if not 1 <= value <= limits[name]:
                raise ValueError(f"{name}={value} is invalid: the engine's profile allows 1 .. {limits[name]}")
        return cls(engine_path=engine_path, engine_config=config_path, plugin_library=plugin,
                   tokenizer_dir=Path(tokenizer_dir).resolve(), cache_config=config["logquant_config"],
                   max_batch=max_batch, max_seq_len=max_seq_len,
                   max_prompt=min(limits["max_prompt"], max_seq_len), gpu=gpu)


def engine_limits(config: dict[str, Any]) -> dict[str, int]:
    """Largest batch, prompt and sequence the engine's optimization profile admits (build_engine._profile)."""
    profile = config["profile"]
    blocks = profile["past.0.block_table"]["max"][1]
    pages = profile["past.0.k_codes"]["max"][0]
    group = config["cache_geometry"]["group_size"]
    # Each slot owns `blocks` pages (paged_graph_executor.SlotCache), so the pool bounds the batch too.
    max_batch = min(profile["input_ids"]["max"][0], pages // blocks)
    return {"max_batch": max_batch, "max_prompt": profile["input_ids"]["max"][1], "max_seq_len": blocks * group}


def config_pbtxt(settings: RepositorySettings) -> str:
    """The model's config.pbtxt (protobuf text format of inference.ModelConfig)."""
    parameters = {
        "engine_path": str(settings.engine_path),
        "engine_config": str(settings.engine_config),
        "plugin_library": str(settings.plugin_library),
        "tokenizer_dir": str(settings.tokenizer_dir),
        "cache_config": json.dumps(settings.cache_config, sort_keys=True),
        "max_batch": str(settings.max_batch),
        "max_seq_len": str(settings.max_seq_len),
        "max_prompt": str(settings.max_prompt),
    }
    lines = [
        "# Generated by `logquant-trt triton-repo`; see docs/serving.md.",
        f'name: "{settings.model_name}"',
        'backend: "python"',
        "# 0: one request per execute; the model batches requests itself, continuously",
        "# (runtime.GenerationEngine over serve/paged_graph_executor.py).",
        "max_batch_size: 0",
        "# Decoupled: a response per token, then a final one with finish_reason (gRPC streaming, HTTP generate_stream).",
        "model_transaction_policy { decoupled: true }",
        *(_tensor_block("input", spec) for spec in INPUTS),
        *(_tensor_block("output", spec) for spec in OUTPUTS),
        f"instance_group [ {{ count: 1 kind: KIND_GPU gpus: [ {settings.gpu} ] }} ]",
        *(f"parameters {{ key: {_quote(key)} value: {{ string_value: {_quote(value)} }} }}"
          for key, value in parameters.items()),
    ]
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    """A protobuf text-format string literal (C escapes; not JSON's \\uXXXX, which text format lacks)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _tensor_block(kind: str, spec: TensorSpec) -> str:
    dims = ", ".join(str(d) for d in spec.shape)
    optional = " optional: true" if spec.optional else ""
    return f'{kind} [ {{ name: "{spec.name}" data_type: {PBTXT_TYPES[spec.triton_dtype]} dims: [ {dims} ]{optional} }} ]'


def write_model_repository(settings: RepositorySettings, out: Path, overwrite: bool = False) -> Path:
    """Write <out>/<model_name>/{config.pbtxt, 1/model.py}; returns the model directory."""
    model_dir = Path(out) / settings.model_name
    if model_dir.exists() and not overwrite:
        raise FileExistsError(f"{model_dir} exists; pass --force to overwrite it")
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(config_pbtxt(settings))
    shutil.copyfile(trt_python_model.__file__, model_dir / "1" / "model.py")
    return model_dir
