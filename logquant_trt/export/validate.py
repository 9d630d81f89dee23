# SPDX-License-Identifier: Apache-2.0
"""Check an exported graph against PyTorch: a prefill and N decode steps, logits compared.

Both sides run the same patched model on their own cache (ONNX Runtime feeds its `present.*`
outputs back as `past.*`), so cache updates are checked through the logits they produce.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from logquant_trt.export.ort_reference import reference_session
from logquant_trt.models.paged_lm import PagedCausalLM, prefill_inputs
from logquant_trt.ops.logquant_attention import CACHE_OUTPUTS, LayerCache

__all__ = ["ValidationResult", "compare_with_torch"]


@dataclasses.dataclass(frozen=True)
class ValidationResult:
    max_abs_diff: list[float]  # per call: the prefill, then each decode step
    tokens_equal: bool  # greedy tokens of both runs agree at every step

    @property
    def largest(self) -> float:
        return max(self.max_abs_diff)


@torch.no_grad()
def compare_with_torch(onnx_path: str | Path, lm: PagedCausalLM, prompt: torch.Tensor, decode_steps: int,
                       threads: int = 1) -> ValidationResult:
    """Run the prompt [B, n] (n > 1) and `decode_steps` greedy tokens through both; PyTorch's tokens drive both."""
    session = reference_session(onnx_path, threads)
    names = [i.name for i in session.get_inputs()]
    batch, n = prompt.shape
    cache = ort_cache = lm.empty_cache(batch, n + decode_steps + 1)
    ids, (positions, lengths) = prompt, prefill_inputs(prompt)
    diffs, tokens_equal = [], True
    for step in range(decode_steps + 1):
        logits, cache = lm.step(ids, positions, lengths, cache)
        feeds = [ids, positions, lengths, *(t for layer in ort_cache for t in layer.tensors)]
        outputs = session.run(None, dict(zip(names, (t.numpy() for t in feeds))))
        ort_logits = torch.from_numpy(outputs[0]).to(logits.dtype)
        diffs.append((ort_logits - logits).abs().max().item())
        ids = logits[:, -1:].argmax(-1)
        tokens_equal &= torch.equal(ort_logits[:, -1:].argmax(-1), ids)
        positions = torch.full((batch, 1), n + step, dtype=torch.int64)
        ort_cache = _next_cache(ort_cache, outputs[1:])
    return ValidationResult(diffs, tokens_equal)


def _next_cache(cache: list[LayerCache], present: list[np.ndarray]) -> list[LayerCache]:
    """`present.*` outputs as the next call's `past.*` inputs: LayerCache.updated, as on PyTorch's side."""
    width = len(CACHE_OUTPUTS)
    return [layer.updated(tuple(torch.from_numpy(a) for a in present[i * width:(i + 1) * width]))
            for i, layer in enumerate(cache)]
