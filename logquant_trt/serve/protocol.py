# SPDX-License-Identifier: Apache-2.0
"""The text-generation model's Triton contract: model names, inputs and outputs.

One table, read by the PyTriton server (server.py), the tritonclient example (client.py) and the
model-repository generator for the TensorRT engine (model_repository.py), so that every way of
serving takes the same requests. Shapes exclude a batch dimension: the models run with
max_batch_size 0 (one request per execute), because the engine batches continuously on its own.
"""

from __future__ import annotations

import dataclasses

import numpy as np

MODEL_NAME = "logquant_generate"  # one response per request (HTTP and gRPC infer)
STREAM_MODEL_NAME = "logquant_generate_stream"  # decoupled: a response per token (gRPC streaming, HTTP SSE)
TRT_MODEL_NAME = "logquant_trt_engine"  # the Python-backend model of `logquant-trt triton-repo`

DEFAULT_MAX_TOKENS = 16


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One input or output. triton_dtype is the TYPE_* / wire name; shape excludes the batch."""

    name: str
    numpy_dtype: type
    triton_dtype: str
    shape: tuple[int, ...]
    optional: bool = False
    doc: str = ""


INPUTS: tuple[TensorSpec, ...] = (
    TensorSpec("text_input", np.bytes_, "BYTES", (1,), True, "UTF-8 prompt; give it or input_ids, not both"),
    TensorSpec("input_ids", np.int64, "INT64", (-1,), True, "prompt token ids; give them or text_input"),
    TensorSpec("max_tokens", np.int32, "INT32", (1,), True, f"new tokens at most (>= 1; default {DEFAULT_MAX_TOKENS})"),
    TensorSpec("temperature", np.float32, "FP32", (1,), True, "0 = greedy (default); > 0 samples"),
    TensorSpec("top_k", np.int32, "INT32", (1,), True, "keep the k most likely tokens; 0 = all (default)"),
    TensorSpec("top_p", np.float32, "FP32", (1,), True, "nucleus mass in (0, 1]; 1 = all (default)"),
    TensorSpec("seed", np.int64, "INT64", (1,), True, "sampling seed in [0, 2**63); absent = random"),
    TensorSpec("ignore_eos", np.bool_, "BOOL", (1,), True, "do not stop at the tokenizer's EOS"),
    TensorSpec("stop_token_ids", np.int64, "INT64", (-1,), True, "extra token ids that end generation"),
)

OUTPUTS: tuple[TensorSpec, ...] = (
    TensorSpec("text_output", np.bytes_, "BYTES", (1,), doc="the new text (streaming: this response's piece)"),
    TensorSpec("output_ids", np.int64, "INT64", (-1,), doc="the new token ids (streaming: this response's)"),
    TensorSpec("finish_reason", np.bytes_, "BYTES", (1,),
               doc="stop, length or aborted; empty in every streaming response but the last"),
)

INPUT_NAMES = tuple(spec.name for spec in INPUTS)
PROMPT_INPUTS = ("text_input", "input_ids")


def input_spec(name: str) -> TensorSpec:
    for spec in INPUTS:
        if spec.name == name:
            return spec
    raise KeyError(f"no input named {name!r}; inputs: {', '.join(INPUT_NAMES)}")


def output_arrays(text: str, token_ids: tuple[int, ...] | list[int], finish_reason: str) -> dict[str, np.ndarray]:
    """One response's tensors: BYTES as object arrays of bytes (what PyTriton and pb_utils.Tensor take)."""
    return {
        "text_output": np.array([text.encode("utf-8")], dtype=np.object_),
        "output_ids": np.asarray(token_ids, dtype=np.int64).reshape(-1),
        "finish_reason": np.array([finish_reason.encode("utf-8")], dtype=np.object_),
    }


def is_final(outputs: dict[str, np.ndarray]) -> bool:
    """Whether a streaming response is its request's last: only the last one carries a finish_reason."""
    return bool(outputs["finish_reason"][0])
