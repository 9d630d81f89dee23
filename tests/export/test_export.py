# SPDX-License-Identifier: Apache-2.0
"""ONNX export with the LogQuantAttention node, checked by onnx, polygraphy and ONNX Runtime.

ONNX Runtime runs the node through the PyTorch reference (logquant_trt.export.ort_reference), so
the graph's logits are compared with the patched PyTorch model over a prefill and decode steps.
"""

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from logquant_trt.config import LogQuantConfig
from logquant_trt.export import export_onnx
from logquant_trt.export.validate import compare_with_torch
from logquant_trt.models.paged_lm import PagedCausalLM
from logquant_trt.ops.logquant_attention import FIELDS, PLUGIN_INPUTS, PLUGIN_NAME

TINY = dict(hidden_size=256, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=64, vocab_size=300)
CONFIG = LogQuantConfig(policy="logquant_ott", group_size=32, window=32, pool_skip_layers=1, dtype="float16")
# fp32 weights with an fp16 cache: PyTorch and ONNX Runtime round q/k/v to fp16 at the same point, then run
# the same reference, so only fp32 matmul order separates them (measured: < 3e-4 on this model).
TINY_LOGIT_TOLERANCE = 2e-3


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[PagedCausalLM, Path]:
    torch.manual_seed(0)
    lm = PagedCausalLM(LlamaForCausalLM(LlamaConfig(**TINY)).eval(), CONFIG)
    result = export_onnx(lm, tmp_path_factory.mktemp("tiny"))
    return lm, result.onnx_path


def test_graph_has_one_plugin_node_per_layer_with_the_plugin_fields(tiny_export: tuple[PagedCausalLM, Path]
                                                                    ) -> None:
    lm, path = tiny_export
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    nodes = [n for n in model.graph.node if n.op_type == PLUGIN_NAME]
    assert len(nodes) == TINY["num_hidden_layers"]
    for layer, node in enumerate(nodes):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert set(attrs) == {*FIELDS, "plugin_version", "plugin_namespace"}
        assert (attrs["plugin_version"], attrs["plugin_namespace"], attrs["layer_idx"]) == (b"1", b"logquant", layer)
        assert (node.domain, len(node.input), len(node.output)) == ("logquant", 17, 13)
    typed = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)}
    assert typed["past.0.k_codes"] == onnx.TensorProto.INT8 and typed["present.1.tail_k"] == onnx.TensorProto.FLOAT16
    assert typed["context_lengths"] == onnx.TensorProto.INT32
    metadata = json.loads((path.parent / "logquant_export.json").read_text())
    assert metadata["plugin"] == {"name": PLUGIN_NAME, "version": "1", "namespace": "logquant"}
    assert metadata["cache_geometry"]["tail_capacity"] == CONFIG.tail_capacity()


def test_translation_takes_the_plugin_inputs_then_its_fields() -> None:
    # The exporter binds the node's inputs and attributes by this signature, which has to spell the names out.
    from logquant_trt.export.dynamo_translations import logquant_attention

    assert tuple(inspect.signature(logquant_attention).parameters) == (*PLUGIN_INPUTS, *FIELDS)


def test_polygraphy_reads_the_graph(tiny_export: tuple[PagedCausalLM, Path]) -> None:
    polygraphy = Path(sys.executable).parent / "polygraphy"
    proc = subprocess.run([str(polygraphy), "inspect", "model", str(tiny_export[1])], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "past.0.k_codes [dtype=int8" in proc.stdout and "Other Opsets: {'logquant': 1}" in proc.stdout


def test_onnx_runtime_matches_pytorch_over_prefill_and_decode(tiny_export: tuple[PagedCausalLM, Path]) -> None:
    lm, path = tiny_export
    prompt = torch.randint(0, 300, (2, 60), generator=torch.Generator().manual_seed(1))
    result = compare_with_torch(path, lm, prompt, decode_steps=8)  # crosses the first seal at 65 tokens
    assert result.largest < TINY_LOGIT_TOLERANCE, result
    assert result.tokens_equal, result


def test_fp32_cache_is_refused_for_export(tmp_path: Path) -> None:
    torch.manual_seed(0)
    lm = PagedCausalLM(LlamaForCausalLM(LlamaConfig(**TINY)).eval(), CONFIG.replace(dtype="float32"))
    with pytest.raises(ValueError, match="dtype='float32'"):
        export_onnx(lm, tmp_path)


@pytest.mark.skipif(os.environ.get("LOGQUANT_TRT_SLOW_TESTS") != "1",
                    reason="about 90 s on 2 CPU cores; set LOGQUANT_TRT_SLOW_TESTS=1")
def test_smollm2_export_matches_pytorch(tmp_path: Path) -> None:
    from logquant_trt.models.embedded import load_embedded_model

    model, tokenizer = load_embedded_model()
    lm = PagedCausalLM(model, LogQuantConfig(policy="logquant_ott", group_size=32, window=32, dtype="float16"))
    path = export_onnx(lm, tmp_path).onnx_path
    prompt = tokenizer("The capital of France is a city that", return_tensors="pt").input_ids
    result = compare_with_torch(path, lm, prompt, decode_steps=4, threads=2)
    # SmolLM2's logits reach ~20; fp32 matmul order across 30 layers measured 0.013 at most.
    assert result.largest < 0.05, result
    assert result.tokens_equal, result
