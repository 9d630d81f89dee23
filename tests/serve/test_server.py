# SPDX-License-Identifier: Apache-2.0
"""`logquant-trt serve` end to end: a real tritonserver (PyTriton) on 127.0.0.1 over the real GenerationEngine
(embedded SmolLM2-135M, CPU reference cache), driven by tritonclient.

- every output of 16 concurrent clients equals the output of the same request served alone;
- the engine batches them (requests in flight at once, rows decoded together in one step);
- streaming pieces add up to the one-response output;
- bad requests get a Triton error naming the bad value, and the server keeps serving;
- stop() leaves no tritonserver process (checked by PID).

One server per module (about 10 s to start). Requests are short (max_tokens <= 8) because the CPU reference
decodes every engine row each step.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pytriton", reason="nvidia-pytriton is not installed (pip install -e .[serve])")
tritonclient_http = pytest.importorskip("tritonclient.http")
tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
psutil = pytest.importorskip("psutil")

from tritonclient.utils import InferenceServerException, np_to_triton_dtype  # noqa: E402

from logquant_trt.config import LogQuantConfig  # noqa: E402
from logquant_trt.runtime import GenerationEngine  # noqa: E402
from logquant_trt.serve.client import Completion, Request, completion, generate, infer_inputs, stream  # noqa: E402
from logquant_trt.serve.errors import error_message  # noqa: E402
from logquant_trt.serve.processes import is_alive  # noqa: E402
from logquant_trt.serve.protocol import MODEL_NAME, STREAM_MODEL_NAME  # noqa: E402
from logquant_trt.serve.server import GenerationServer, ServerConfig  # noqa: E402

MAX_BATCH = 8  # fewer rows than clients: requests also wait for a free row, and are admitted as rows retire
MAX_SEQ_LEN = 64
NUM_CLIENTS = 16
REQUESTS_PER_CLIENT = 3


@dataclasses.dataclass(frozen=True)
class Case:
    tag: str
    request: Request


PROMPTS = ("The capital of France is", "def add(a, b):", "Once upon a time")
# Greedy and seeded sampling, text and ids; ids cases are filled in from the tokenizer (see `cases`).
CASE_SPECS = (
    ("greedy_text_0", dict(prompt=PROMPTS[0], max_tokens=8)),
    ("greedy_text_1", dict(prompt=PROMPTS[1], max_tokens=6)),
    ("greedy_ids_2", dict(ids_of=PROMPTS[2], max_tokens=8)),
    ("sampled_text_0", dict(prompt=PROMPTS[0], max_tokens=8, temperature=0.8, top_k=40, seed=7)),
    ("sampled_ids_1", dict(ids_of=PROMPTS[1], max_tokens=7, temperature=1.0, top_p=0.9, seed=1234)),
    ("sampled_text_2", dict(prompt=PROMPTS[2], max_tokens=8, temperature=1.3, seed=99, ignore_eos=True)),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    config = LogQuantConfig(policy="logquant_ott", group_size=32, window=32, residual=32, dtype="float32")
    engine = GenerationEngine.from_pretrained(None, config, device="cpu", max_batch=MAX_BATCH,
                                              max_seq_len=MAX_SEQ_LEN)
    log_file = tmp_path_factory.mktemp("triton") / "tritonserver.log"  # keeps Triton's lines out of pytest's output
    server = GenerationServer(engine, ServerConfig(http_port=0, grpc_port=0, metrics_port=0, log_file=log_file))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cases(server: Any) -> list[Case]:
    tokenizer = server.engine.tokenizer
    built = []
    for tag, spec in CASE_SPECS:
        spec = dict(spec)
        ids_of = spec.pop("ids_of", None)
        if ids_of is not None:
            spec["input_ids"] = tokenizer.encode(ids_of)
        built.append(Case(tag, Request(**spec)))
    return built


@pytest.fixture(scope="module")
def solo(server: Any, cases: list[Case]) -> dict[str, Completion]:
    """Each case served alone (one request in the server at a time)."""
    return {case.tag: generate(server.http_url, case.request) for case in cases}


def test_solo_outputs_are_complete(server: Any, cases: list[Case], solo: dict[str, Completion]) -> None:
    tokenizer = server.engine.tokenizer
    for case in cases:
        out = solo[case.tag]
        assert out.finish_reason in ("length", "stop"), case.tag
        assert 1 <= len(out.token_ids) <= case.request.max_tokens, case.tag
        assert out.text == tokenizer.decode(list(out.token_ids), skip_special_tokens=True), case.tag
        if out.finish_reason == "length":
            assert len(out.token_ids) == case.request.max_tokens, case.tag


def test_concurrent_clients_match_solo(server: Any, cases: list[Case],
                                       solo: dict[str, Completion]) -> None:
    def client(index: int) -> list[tuple[str, Completion]]:
        got = []
        for j in range(REQUESTS_PER_CLIENT):
            case = cases[(index + j) % len(cases)]
            protocol, url = ("grpc", server.grpc_url) if (index + j) % 2 else ("http", server.http_url)
            got.append((case.tag, generate(url, case.request, protocol)))
        return got

    server.service.peak_in_flight = 0
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(NUM_CLIENTS) as pool:
        outcomes = [o for result in pool.map(client, range(NUM_CLIENTS)) for o in result]
    wall = time.perf_counter() - start

    assert len(outcomes) == NUM_CLIENTS * REQUESTS_PER_CLIENT
    for tag, out in outcomes:
        assert out == solo[tag], f"{tag}: concurrent {out} != solo {solo[tag]}"
    # Triton hands the engine as many requests at once as the model has instances (MAX_BATCH by default) ...
    assert server.service.peak_in_flight >= MAX_BATCH, f"at most {server.service.peak_in_flight} requests at once"
    assert server.service.in_flight == 0
    # ... and the engine decodes them together (rows busy in one decode step), not one after another.
    peak = server.service.engine.peak_batch
    assert peak >= MAX_BATCH // 2, f"the engine decoded at most {peak} requests together"
    print(f"{len(outcomes)} requests in {wall:.1f} s; {peak} decoded together at the peak")


def test_stream_adds_up_to_solo(server: Any, cases: list[Case], solo: dict[str, Completion]) -> None:
    def run(case: Case) -> list[Completion]:
        return list(stream(server.grpc_url, case.request))

    picked = [cases[0], cases[3], cases[4]]
    with concurrent.futures.ThreadPoolExecutor(len(picked)) as pool:
        streams = list(pool.map(run, picked))
    for case, pieces in zip(picked, streams):
        expected = solo[case.tag]
        assert [p.finish_reason for p in pieces[:-1]] == [""] * (len(pieces) - 1), case.tag
        assert pieces[-1].finish_reason == expected.finish_reason, case.tag
        # one response per token, then the final one (no ids) with whatever text was held back
        assert len(pieces) == len(expected.token_ids) + 1, case.tag
        assert tuple(t for p in pieces for t in p.token_ids) == expected.token_ids, case.tag
        assert "".join(p.text for p in pieces) == expected.text, case.tag


# -- bad requests -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Bad:
    tag: str
    arrays: dict[str, np.ndarray]
    expect: tuple[str, ...]  # substrings of the error message


def _text(value: bytes) -> np.ndarray:
    return np.array([value], dtype=np.object_)


def _i32(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int32)


def _i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


HELLO = _text(b"Hello")
BAD_REQUESTS = (
    Bad("empty_text", {"text_input": _text(b""), "max_tokens": _i32(4)}, ("text_input=''", "empty")),
    Bad("empty_ids", {"input_ids": _i64(), "max_tokens": _i32(4)}, ("prompt_token_ids=()", "empty")),
    Bad("max_tokens_zero", {"text_input": HELLO, "max_tokens": _i32(0)}, ("max_tokens=0",)),
    Bad("max_tokens_negative", {"text_input": HELLO, "max_tokens": _i32(-3)}, ("max_tokens=-3",)),
    Bad("max_tokens_beyond_capacity", {"text_input": HELLO, "max_tokens": _i32(10_000)},
        ("max_tokens=10000", f"max_seq_len={MAX_SEQ_LEN}")),
    Bad("context_too_long", {"input_ids": _i64(*[504] * (MAX_SEQ_LEN + 1)), "max_tokens": _i32(1)},
        (f"prompt_token_ids='<{MAX_SEQ_LEN + 1} tokens>'", f"max_seq_len={MAX_SEQ_LEN}")),
    Bad("token_id_out_of_vocab", {"input_ids": _i64(1, 999_999), "max_tokens": _i32(2)}, ("999999",)),
    Bad("token_id_negative", {"input_ids": _i64(-1), "max_tokens": _i32(2)}, ("prompt_token_ids=-1",)),
    Bad("both_prompts", {"text_input": HELLO, "input_ids": _i64(1, 2), "max_tokens": _i32(2)},
        ("text_input, input_ids",)),
    Bad("no_prompt", {"max_tokens": _i32(2)}, ("neither",)),
    Bad("not_utf8", {"text_input": _text(b"\xff\xfe"), "max_tokens": _i32(2)}, ("not UTF-8",)),
    Bad("temperature_negative", {"text_input": HELLO, "temperature": np.array([-1.0], np.float32)},
        ("temperature=-1.0",)),
    Bad("top_p_zero", {"text_input": HELLO, "top_p": np.array([0.0], np.float32)}, ("top_p=0.0",)),
    Bad("top_k_negative", {"text_input": HELLO, "top_k": _i32(-2)}, ("top_k=-2",)),
    Bad("seed_negative", {"text_input": HELLO, "temperature": np.array([1.0], np.float32), "seed": _i64(-5)},
        ("seed=-5",)),
    Bad("max_tokens_fp32", {"text_input": HELLO, "max_tokens": np.array([4.0], np.float32)},
        ("max_tokens", "FP32", "INT32")),
    Bad("input_ids_int32", {"input_ids": _i32(1, 2, 3), "max_tokens": _i32(2)}, ("input_ids", "INT32", "INT64")),
    Bad("max_tokens_two_values", {"text_input": HELLO, "max_tokens": _i32(4, 4)}, ("max_tokens", "[2]")),
    Bad("input_ids_2d", {"input_ids": np.array([[1, 2, 3]], np.int64), "max_tokens": _i32(2)},
        ("input_ids", "[1,3]")),
    Bad("unknown_input", {"text_input": HELLO, "foo": _i32(1)}, ("foo",)),
)


def _send_raw(url: str, model: str, arrays: dict[str, np.ndarray]) -> Any:
    """Sends the arrays as they are: their own dtypes and shapes, whatever the protocol says."""
    with tritonclient_http.InferenceServerClient(url) as client:
        dtypes = {name: np_to_triton_dtype(array.dtype) for name, array in arrays.items()}
        return client.infer(model, infer_inputs(tritonclient_http, arrays, dtypes))


@pytest.mark.parametrize("bad", BAD_REQUESTS, ids=lambda b: b.tag)
def test_bad_request_gets_clear_error(server: Any, bad: Bad) -> None:
    with pytest.raises(InferenceServerException) as caught:
        _send_raw(server.http_url, MODEL_NAME, bad.arrays)
    message = error_message(caught.value.message())
    for expected in bad.expect:
        assert expected in message, f"{bad.tag}: {expected!r} not in {message!r}"


def test_bad_request_on_the_stream_model(server: Any) -> None:
    with pytest.raises(InferenceServerException) as caught:
        list(stream(server.grpc_url, Request(prompt="Hello", max_tokens=0)))
    assert "max_tokens=0" in error_message(caught.value.message())


def test_serves_after_bad_requests(server: Any, cases: list[Case], solo: dict[str, Completion]) -> None:
    for bad in BAD_REQUESTS[:3]:  # interleave a few more refusals with good requests
        with pytest.raises(InferenceServerException):
            _send_raw(server.http_url, MODEL_NAME, bad.arrays)
    with tritonclient_grpc.InferenceServerClient(server.grpc_url) as client:
        result = client.infer(MODEL_NAME, infer_inputs(tritonclient_grpc, cases[0].request.arrays()))
    assert completion(result) == solo[cases[0].tag]
    assert generate(server.http_url, cases[4].request) == solo[cases[4].tag]
    with tritonclient_http.InferenceServerClient(server.http_url) as client:
        assert client.is_model_ready(MODEL_NAME) and client.is_model_ready(STREAM_MODEL_NAME)


# -- shutdown (last: it stops the module's server) -------------------------------------------------------------


def test_stop_leaves_no_process(server: Any) -> None:
    pids = server.tritonserver_pids
    assert len(pids) >= 2, f"expected tritonserver and its backend stubs, got {pids}"
    tree = [psutil.Process(pid) for pid in pids]
    names = {p.name() for p in tree}
    assert "tritonserver" in names, names
    started = time.perf_counter()
    server.stop()
    elapsed = time.perf_counter() - started
    alive = [p.pid for p in tree if is_alive(p)]
    assert not alive, f"processes left after stop(): {alive}"
    assert elapsed < 30, f"stop() took {elapsed:.1f} s"
    server.stop()  # idempotent
