# SPDX-License-Identifier: Apache-2.0
"""Checkpoint -> checked ONNX (+ ONNX Runtime validation): what `logquant-trt export` and
build_scripts/build_engine.py run. Every input is checked before the model loads."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from logquant_trt.config import LogQuantConfig
from logquant_trt.export.export import ExportResult, export_onnx
from logquant_trt.ops.logquant_attention import plugin_config_problems

__all__ = ["ExportReport", "check_inputs", "export_checkpoint"]

logger = logging.getLogger(__name__)

# Random ids (a numerical check needs no tokenizer); 60 + 8 decode steps crosses the first seal (65 tokens
# for the default W = G = 32), so the quantized path is compared too.
VALIDATION_PROMPT_TOKENS = 60


@dataclasses.dataclass(frozen=True)
class ExportReport:
    export: ExportResult
    max_logit_diff: float | None  # ONNX Runtime vs PyTorch over the validation steps; None if not run
    tokens_equal: bool | None


def check_inputs(model_path: Path | None, config: LogQuantConfig, validate_steps: int = 0) -> None:
    """ValueError naming the bad value: unsupported architecture, missing weights, head_dim, dtype."""
    from logquant_trt.models.patching import check_patchable

    problems = plugin_config_problems(config)
    if problems:
        raise ValueError("; ".join(problems))
    if validate_steps < 0:
        raise ValueError(f"--validate={validate_steps}: the number of decode steps to validate must be >= 0")
    if validate_steps and config.dtype != "float16":
        raise ValueError(f"validation runs float16 caches only; got dtype={config.dtype!r} (use --validate 0)")
    if validate_steps and config.uses_log_window and config.sink_tokens:
        raise ValueError(f"sink_tokens={config.sink_tokens} with policy {config.policy.value}: the reference "
                         "cannot validate it (logquant_trt.reference.paged_step); use --validate 0")
    if model_path is None:
        return  # the embedded SmolLM2-135M: llama, head_dim 64
    from transformers import AutoConfig

    from logquant_trt.models.checkpoint import check_checkpoint

    check_checkpoint(model_path)
    check_patchable(AutoConfig.from_pretrained(model_path, local_files_only=True), config)


def export_checkpoint(model_path: Path | None, out_dir: Path, config: LogQuantConfig,
                      validate_steps: int = 0) -> ExportReport:
    """Export a local HF checkpoint (None: the embedded model) to out_dir; optionally validate.

    The graph keeps the checkpoint's fp32 weights (CPU export), with the cache and attention in
    `config.dtype`; validation needs dtype float16 (ONNX Runtime's Python ops). Callers run check_inputs first,
    so that bad input is refused before any long work.
    """
    from logquant_trt.models.paged_lm import PagedCausalLM

    if model_path is None:
        from logquant_trt.models.embedded import ensure_embedded_model

        model_path = ensure_embedded_model()
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, local_files_only=True).eval()
    lm = PagedCausalLM(model, config)
    logger.info("exporting %d layers to %s", lm.num_layers, out_dir)
    result = export_onnx(lm, out_dir)
    if not validate_steps:
        return ExportReport(result, None, None)
    from logquant_trt.export.validate import compare_with_torch

    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, model.config.vocab_size, (1, VALIDATION_PROMPT_TOKENS), generator=generator)
    logger.info("validating in ONNX Runtime: prefill of %d tokens + %d decode steps", prompt.shape[1],
                validate_steps)
    validation = compare_with_torch(result.onnx_path, lm, prompt, validate_steps, threads=torch.get_num_threads())
    return ExportReport(result, validation.largest, validation.tokens_equal)
