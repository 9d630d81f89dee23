# SPDX-License-Identifier: Apache-2.0
"""GenerationServer.start() retries a load that lost PyTriton's instance handshake race (server.py
_lost_handshake_race) and nothing else. The retried start is real: the first attempt starts tritonserver, stops it
the way a failed load does, and reports the race; the second must then serve."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("pytriton", reason="nvidia-pytriton is not installed (pip install -e .[serve])")
tritonclient_http = pytest.importorskip("tritonclient.http")
psutil = pytest.importorskip("psutil")

from tritonclient.utils import InferenceServerException  # noqa: E402

from logquant_trt.serve import server as server_module  # noqa: E402
from logquant_trt.serve.processes import is_alive  # noqa: E402
from logquant_trt.serve.protocol import MODEL_NAME, STREAM_MODEL_NAME  # noqa: E402
from logquant_trt.serve.server import GenerationServer, ServerConfig  # noqa: E402

# What Triton answered on a 2-core CI machine when instance 1 of logquant_generate lost the race (abridged).
RACE = InferenceServerException(
    "[400] load failed for model 'logquant_generate': version 1 is at UNAVAILABLE state: Internal: "
    "TritonModelException: Model initialize error: Traceback (most recent call last):\n"
    '  File "/tmp/folderfx4GRC/1/model.py", line 425, in initialize\n'
    "    inference_handler_config = get_config_from_handshake_server(handshake_socket)\n"
    "ConnectionRefusedError: [Errno 111] Connection refused")


class ScriptedStart(GenerationServer):
    """Each attempt takes the next item of `script`: "race" (start for real, stop, report the race), an
    exception (raised as is) or "start" (the real attempt)."""

    def __init__(self, engine: Any, script: list[Any], **config: Any) -> None:
        super().__init__(engine, ServerConfig(http_port=0, grpc_port=0, metrics_port=0, **config))
        self.script = list(script)
        self.attempts = 0

    def _start_once(self) -> None:
        self.attempts += 1
        step = self.script.pop(0)
        if step == "race":
            super()._start_once()
            self.stop()
            raise RACE
        if isinstance(step, BaseException):
            raise step
        super()._start_once()


def test_a_lost_race_is_started_again(idle_engine: Any, tmp_path: Any) -> None:
    server = ScriptedStart(idle_engine, ["race", "start"], instances=2, log_file=tmp_path / "triton.log")
    server.start()
    try:
        assert server.attempts == 2
        with tritonclient_http.InferenceServerClient(server.http_url) as client:
            assert client.is_model_ready(MODEL_NAME) and client.is_model_ready(STREAM_MODEL_NAME)
        assert server.service is not None and server.engine.has_work is False
        tree = [psutil.Process(pid) for pid in server.tritonserver_pids]
        assert any(p.name() == "tritonserver" for p in tree), tree
    finally:
        server.stop()
    assert not [p.pid for p in tree if is_alive(p)], "processes left after stop()"


def test_other_failures_are_not_retried(idle_engine: Any) -> None:
    server = ScriptedStart(idle_engine, [RuntimeError("cannot find the tritonserver process"), "start"])
    with pytest.raises(RuntimeError, match="cannot find the tritonserver process"):
        server.start()
    assert server.attempts == 1


def test_the_race_is_reported_after_the_last_attempt(idle_engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "_START_ATTEMPTS", 2)
    server = ScriptedStart(idle_engine, [RACE, RACE, "start"])
    with pytest.raises(InferenceServerException, match="get_config_from_handshake_server"):
        server.start()
    assert server.attempts == 2
