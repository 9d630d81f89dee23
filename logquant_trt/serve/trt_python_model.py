# SPDX-License-Identifier: Apache-2.0
"""Triton Python-backend model serving the TensorRT engine of `make engine` (copied to <repo>/<model>/1/model.py).

UNVERIFIED: written against the TensorRT 10 Python API and Triton's Python backend, but never run: the
project's machines have no TensorRT (NOTES §2). What is tested without TensorRT: this file compiles, and
the generation loop it drives (runtime.GenerationEngine over paged_graph_executor) runs on the CPU with
PagedCausalLM, the engine's own graph in PyTorch, in place of TensorRTStep (tests/serve/test_paged_graph_executor.py).

Per instance (one GPU): load the plugin library (LogQuantAttention registers through
IPluginRegistry::loadLibrary, not at dlopen: docs/plugin.md), deserialize the engine, allocate the
paged cache for max_batch slots, and run a GenerationEngine on a thread. The model is decoupled: execute()
hands each request to the generator and returns; a thread per request sends a response per token and
a final one with finish_reason (the protocol of `logquant_generate_stream`, logquant_trt/serve/protocol.py).

Needs, in the Python environment of Triton's Python backend: tensorrt (>= 10.3, its Python bindings),
torch with CUDA, transformers, numpy, and this package (`pip install logquant_trt` or `-e <checkout>`).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

try:  # present only inside Triton's Python backend
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported elsewhere (tests compile and inspect this file)
    pb_utils = None


class TensorRTStep:
    """The engine as a paged_graph_executor.StepFn: binds the caller's tensors, runs in place on one CUDA stream."""

    def __init__(self, engine_path: str, plugin_library: str, device: Any) -> None:
        import tensorrt as trt
        import torch

        self.trt, self.torch, self.device = trt, torch, device
        self.logger = trt.Logger(trt.Logger.WARNING)
        # The plugin has no static registrar (docs/plugin.md), so LD_PRELOAD would not register it: load it here.
        self.plugin_handle = trt.get_plugin_registry().load_library(plugin_library)
        with torch.cuda.device(device):
            runtime = trt.Runtime(self.logger)
            self.engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
            if self.engine is None:
                raise RuntimeError(f"TensorRT could not deserialize {engine_path} (plugin {plugin_library} "
                                   f"loaded; see the TensorRT log above)")
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(device)
        from logquant_trt.ops.logquant_attention import CACHE_INPUTS
        from logquant_trt.serve.paged_graph_executor import TENSOR_ALIGNMENT

        self.alignment = TENSOR_ALIGNMENT

        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        # The cache argument's order (paged_graph_executor.SlotCache.views): layer by layer, CACHE_INPUTS within a layer,
        # named as logquant_trt.export names the graph inputs. Built from names, not the engine's I/O order.
        layers = sum(n.startswith("past.") for n in self.inputs) // len(CACHE_INPUTS)
        self.cache_inputs = [f"past.{i}.{name}" for i in range(layers) for name in CACHE_INPUTS]
        missing = sorted(set(self.cache_inputs) - set(self.inputs))
        if missing or len(self.inputs) != 3 + len(self.cache_inputs):
            raise RuntimeError(f"{engine_path} is not a logquant_trt export: inputs {self.inputs[:6]}..., "
                               f"missing {missing[:3]}")
        self.vocab_size = int(self.engine.get_tensor_shape("logits")[-1])

    def __call__(self, input_ids: Any, position_ids: Any, context_lengths: Any, cache: list[Any]) -> Any:
        torch = self.torch
        if len(cache) != len(self.cache_inputs):
            raise RuntimeError(f"the engine takes {len(self.cache_inputs)} cache tensors, got {len(cache)}")
        tensors = {"input_ids": input_ids, "position_ids": position_ids, "context_lengths": context_lengths,
                   **dict(zip(self.cache_inputs, cache))}
        for name in self.inputs:
            tensor = tensors[name]
            if not tensor.is_contiguous():
                raise RuntimeError(f"{name} must be contiguous (a row slice of a C-contiguous cache tensor is)")
            self.context.set_input_shape(name, tuple(tensor.shape))
            self._bind(name, tensor)
        logits = torch.empty(tuple(self.context.get_tensor_shape("logits")), dtype=torch.float32, device=self.device)
        self._bind("logits", logits)
        for name in self.outputs:
            if name != "logits":  # present.<i>.<x> aliases past.<i>.<x>: the plugin updates the cache in place
                self._bind(name, tensors["past." + name.removeprefix("present.")])
        # The inputs were written on torch's current stream; order the engine after them, and the caller after it.
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        return logits

    def _bind(self, name: str, tensor: Any) -> None:
        address = tensor.data_ptr()
        if address % self.alignment:  # setTensorAddress requires it
            raise RuntimeError(f"{name} is at {address:#x}, not {self.alignment}-byte aligned as TensorRT requires")
        if not self.context.set_tensor_address(name, address):
            raise RuntimeError(f"TensorRT refused the address of {name} (see the TensorRT log)")


class TritonPythonModel:
    """Triton's entry points: initialize, execute (decoupled), finalize."""

    def initialize(self, args: dict[str, str]) -> None:
        import torch
        from transformers import AutoTokenizer

        from logquant_trt.config import LogQuantConfig
        from logquant_trt.runtime import GenerationEngine
        from logquant_trt.serve.infer import GenerationService
        from logquant_trt.serve.paged_graph_executor import PagedGraphExecutor, SlotCache

        config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise pb_utils.TritonModelException("this model streams: set model_transaction_policy { decoupled: true }")
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.device = torch.device(f"cuda:{args.get('model_instance_device_id', '0')}")
        torch.cuda.set_device(self.device)
        engine_config = json.loads(Path(params["engine_config"]).read_text())
        geometry = engine_config["cache_geometry"]
        max_batch, max_seq_len = int(params["max_batch"]), int(params["max_seq_len"])
        self.step = TensorRTStep(params["engine_path"], params["plugin_library"], self.device)
        cache = SlotCache.empty(LogQuantConfig.from_dict(engine_config["logquant_config"]), slots=max_batch,
                                layers=geometry["num_layers"], kv_heads=geometry["num_kv_heads"],
                                head_dim=geometry["head_dim"], max_seq_len=max_seq_len, device=self.device)
        executor = PagedGraphExecutor(self.step, cache, max_seq_len=max_seq_len, max_prompt=int(params["max_prompt"]),
                                      vocab_size=self.step.vocab_size, device=self.device)
        self.generator = GenerationEngine(executor, AutoTokenizer.from_pretrained(params["tokenizer_dir"]))
        self.generator.start()
        # The PyTriton server's request path: parsing, submission and its errors, the streaming responses.
        self.service = GenerationService(self.generator)
        self.input_names = [spec["name"] for spec in config["input"]]
        self.logger = pb_utils.Logger

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                handle = self.service.submit(self._inputs(request))
            except (ValueError, RuntimeError) as error:  # BadRequest is a ValueError, GenerationFailed a RuntimeError
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error))),
                            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                continue
            threading.Thread(target=self._respond, args=(handle, sender), daemon=True).start()
        return None

    def _inputs(self, request: Any) -> dict[str, np.ndarray]:
        """The request's input arrays by name; optional inputs it does not give are absent."""
        inputs = {}
        for name in self.input_names:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:
                inputs[name] = tensor.as_numpy()
        return inputs

    def _respond(self, handle: Any, sender: Any) -> None:
        """One response per token, then a final one with finish_reason (and any text held back)."""
        from logquant_trt.serve.infer import stream_outputs
        from logquant_trt.serve.protocol import is_final

        try:
            for outputs in stream_outputs(handle, self.service.tokenizer):
                final = is_final(outputs)
                if sender.is_cancelled() and not final:
                    handle.cancel()
                    continue  # drain: the generator finishes the request as aborted
                sender.send(_response(outputs), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if final else 0)
        except Exception as error:  # noqa: BLE001 - reported to this request's client
            self.logger.log_error(f"request {handle.request_id} failed: {error}")
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"generation failed: {error}")),
                        flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        finally:
            self.service.release(handle)

    def finalize(self) -> None:
        self.service.close()  # refuse new requests before the generator stops, as the PyTriton server does
        self.generator.stop()


def _response(arrays: dict[str, np.ndarray]) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(name, value) for name, value in arrays.items()])
