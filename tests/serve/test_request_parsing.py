# SPDX-License-Identifier: Apache-2.0
"""Request inputs -> prompt ids and SamplingParams (request_parsing.py), refusals on the request path
(GenerationService.submit) and the cleanup of a refused call, the streaming detokenizer, ports, and the client's
request arrays: the server's pure-Python parts, without a server. The engine is the real GenerationEngine over an
executor that is never stepped (conftest.py): submit() only checks and queues."""

from __future__ import annotations

import socket
from typing import Any

import numpy as np
import pytest

from logquant_trt.runtime import EngineError, GenerationEngine
from logquant_trt.runtime.requests import SamplingParams
from logquant_trt.serve.client import Request
from logquant_trt.serve.detokenize import IncrementalDetokenizer, decode
from logquant_trt.serve.errors import BadRequest, GenerationFailed, error_message
from logquant_trt.serve.infer import GenerationService
from logquant_trt.serve.processes import resolve_ports
from logquant_trt.serve.protocol import INPUTS, output_arrays
from logquant_trt.serve.request_parsing import parse_request


@pytest.fixture
def service(idle_engine: GenerationEngine) -> Any:
    service = GenerationService(idle_engine)
    yield service
    service.close()


def parse(tokenizer: Any, **inputs: Any) -> Any:
    return parse_request({k: np.asarray(v) for k, v in inputs.items()}, tokenizer)


def test_text_and_ids_give_the_same_request(tokenizer: Any) -> None:
    by_text = parse(tokenizer, text_input=np.array([b"Hello world"], dtype=object), max_tokens=np.int32([5]))
    by_ids = parse(tokenizer, input_ids=np.int64(tokenizer.encode("Hello world")), max_tokens=np.int32([5]))
    assert by_text == by_ids
    assert by_text.params == SamplingParams(max_tokens=5)


def test_every_sampling_field_is_read(tokenizer: Any) -> None:
    got = parse(tokenizer, input_ids=np.int64([1, 2]), max_tokens=np.int32([3]), temperature=np.float32([0.5]),
                top_k=np.int32([7]), top_p=np.float32([0.25]), seed=np.int64([42]), ignore_eos=np.bool_([True]),
                stop_token_ids=np.int64([9, 10]))
    assert got.params == SamplingParams(max_tokens=3, temperature=0.5, top_k=7, top_p=0.25, seed=42,
                                        ignore_eos=True, stop_token_ids=(9, 10))


@pytest.mark.parametrize("inputs, message", [
    (dict(text_input=np.array([b""], dtype=object)), "text_input='' is invalid: the prompt is empty"),
    (dict(input_ids=np.int64([])), "prompt_token_ids=() is invalid: the prompt is empty"),
    (dict(), "got neither"),
    (dict(text_input=np.array([b"a"], dtype=object), input_ids=np.int64([1])), "got text_input, input_ids"),
    (dict(input_ids=np.int64([3, 10 ** 9])), "prompt_token_ids=1000000000 is invalid"),
    (dict(input_ids=np.int64([1]), max_tokens=np.int32([0])), "max_tokens=0 is invalid"),
    (dict(input_ids=np.int64([1]), temperature=np.float32([np.nan])), "temperature=nan is invalid"),
    (dict(input_ids=np.int64([1]), max_tokens=np.int32([1, 2])), "max_tokens=[1, 2] is invalid"),
    (dict(text_input=np.array([b"\xc3"], dtype=object)), "is not UTF-8"),
    (dict(input_ids=np.int64([1]), bogus=np.int32([1])), "unknown input 'bogus'"),
])
def test_bad_inputs_name_the_value(service: Any, inputs: dict[str, Any], message: str) -> None:
    # Through submit(): parsing checks the fields, the engine the prompt's token ids.
    with pytest.raises(BadRequest) as caught:
        service.submit({k: np.asarray(v) for k, v in inputs.items()})
    assert message in str(caught.value)
    assert service.in_flight == 0


def test_refused_later_request_releases_the_earlier_ones(service: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A call of two requests whose second is refused after the first was submitted (the engine stopped in
    between): the first is cancelled, so that it frees its row, and nothing stays in flight."""
    engine, submitted = service.engine, []

    def submit_once(prompt: Any, params: Any) -> Any:
        if submitted:
            raise EngineError("the engine is stopped; it accepts no new requests until start()")
        submitted.append(GenerationEngine.submit(engine, prompt, params))
        return submitted[-1]

    monkeypatch.setattr(engine, "submit", submit_once)
    request = {"input_ids": np.int64([1, 2]), "max_tokens": np.int32([1])}
    with pytest.raises(GenerationFailed, match="the engine is stopped"):
        service.blocking_infer([request, request])
    assert submitted[0].cancelled
    assert service.in_flight == 0


def test_bad_request_shows_no_traceback_to_clients() -> None:
    import traceback

    try:
        raise BadRequest("max_tokens=0 is invalid")
    except BadRequest as error:
        text = "".join(traceback.format_exception(None, error, error.__traceback__))
    assert text == "logquant_trt.serve.errors.BadRequest: max_tokens=0 is invalid\n"
    wrapped = "Model execute error: Traceback ...\\nc_python_backend_utils.TritonModelException: " + text
    assert error_message(wrapped) == "max_tokens=0 is invalid"


def test_streamed_pieces_add_up_to_the_text(tokenizer: Any) -> None:
    ids = tokenizer.encode("naïve café — 東京 🙂 done")
    detokenizer = IncrementalDetokenizer(tokenizer)
    pieces = [detokenizer.push([t]) for t in ids] + [detokenizer.flush()]
    assert "".join(pieces) == decode(tokenizer, ids)
    assert "\ufffd" not in "".join(pieces)


def test_outputs_follow_the_protocol() -> None:
    arrays = output_arrays("hi", (1, 2), "length")
    assert arrays["text_output"].tolist() == [b"hi"] and arrays["finish_reason"].tolist() == [b"length"]
    assert arrays["output_ids"].dtype == np.int64 and arrays["output_ids"].tolist() == [1, 2]


def test_client_request_arrays_use_protocol_dtypes() -> None:
    arrays = Request(prompt="hi", max_tokens=3, temperature=0.5, seed=1, ignore_eos=True).arrays()
    specs = {s.name: s for s in INPUTS}
    assert set(arrays) == {"text_input", "max_tokens", "temperature", "seed", "ignore_eos"}
    for name, array in arrays.items():
        assert array.shape == (1,), name
        if specs[name].triton_dtype != "BYTES":
            assert array.dtype == specs[name].numpy_dtype, name
    assert Request(input_ids=[4, 5, 6]).arrays()["input_ids"].tolist() == [4, 5, 6]


def test_ports_zero_become_distinct_free_ports() -> None:
    ports = resolve_ports({"http_port": 0, "grpc_port": 0, "metrics_port": 0})
    assert len(set(ports.values())) == 3
    for port in ports.values():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free: nothing else holds it
    with pytest.raises(ValueError, match="http_port=70000 is invalid"):
        resolve_ports({"http_port": 70000})
    with pytest.raises(ValueError, match="ports must differ"):
        resolve_ports({"http_port": 8000, "grpc_port": 8000})
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ValueError, match=f"grpc_port={port} is unavailable on 127.0.0.1"):
            resolve_ports({"http_port": 0, "grpc_port": port})
