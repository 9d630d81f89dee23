# SPDX-License-Identifier: Apache-2.0
"""`logquant-trt serve` as users run it (a separate process), `logquant-trt client` against it, then Ctrl-C:
the command exits 0 and leaves no process of its tree. Bad flags are refused by value before the model loads."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("pytriton", reason="nvidia-pytriton is not installed (pip install -e .[serve])")
pytest.importorskip("tritonclient.grpc")
psutil = pytest.importorskip("psutil")

from logquant_trt.cli import main as cli_main  # noqa: E402
from logquant_trt.serve.processes import is_alive  # noqa: E402

READY = re.compile(r"serving on http://(127\.0\.0\.1:\d+) and grpc (127\.0\.0\.1:\d+)")
START_TIMEOUT_S = 180


def _serve(log_file: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "logquant_trt.cli", "serve", "--http-port", "0", "--grpc-port", "0",
               "--metrics-port", "0", "--max-batch", "2", "--max-seq-len", "64", "--group-size", "32",
               "--window", "32", "--residual", "32", "--log-file", str(log_file)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_ready(process: subprocess.Popen) -> tuple[str, str, list[str]]:
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            assert process.poll() is None, "serve exited early:\n" + "".join(seen[-30:])
            continue
        seen.append(line)
        found = READY.search(line)
        if found:
            return found.group(1), found.group(2), seen
    raise AssertionError("serve did not come up:\n" + "".join(seen[-30:]))


def test_serve_client_and_ctrl_c(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    process = _serve(tmp_path / "tritonserver.log")
    try:
        http_url, grpc_url, _ = _wait_ready(process)
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        assert any(p.name() == "tritonserver" for p in tree)

        assert cli_main(["client", "--url", http_url, "--max-tokens", "4", "--ignore-eos", "Hello"]) == 0
        once = capsys.readouterr().out.splitlines()
        assert once[-1] == "[4 tokens, finish_reason: length]"
        assert cli_main(["client", "--stream", "--grpc-url", grpc_url, "--max-tokens", "4", "--ignore-eos",
                         "Hello"]) == 0
        streamed = capsys.readouterr().out
        assert streamed.endswith("\n[finish_reason: length]\n")
        assert streamed.removesuffix("\n[finish_reason: length]\n") == "\n".join(once[:-1])

        assert cli_main(["client", "--url", http_url, "--max-tokens", "0", "Hello"]) == 1
        assert "max_tokens=0 is invalid" in capsys.readouterr().err
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=120)
    assert code == 0
    assert not [p.pid for p in tree if is_alive(p)], "processes left after Ctrl-C"


@pytest.mark.parametrize("args, message", [
    (["--max-batch", "0"], "--max-batch=0 is invalid"),
    (["--http-port", "70000"], "--http-port=70000 is invalid"),
    (["--window", "33", "--group-size", "32"], "LogQuantConfig.window=33 is invalid"),
    (["--policy", "int4"], "LogQuantConfig.policy='int4' is invalid"),
    (["--device", "tpu"], "--device='tpu' is invalid"),
    (["--model", "/nonexistent"], "--model='/nonexistent' is not a directory"),
    (["--http-port", "1", "--grpc-port", "1"], "ports must differ"),
    (["--instances", "300"], "instances=300 is invalid"),
    (["--backend", "bogus"], "--backend='bogus' is invalid"),
    (["--threads", "0"], "--threads=0 is invalid"),
    (["--log-file", "/nonexistent/triton.log"], "--log-file='/nonexistent/triton.log'"),
])
def test_bad_serve_flags_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["serve", *args]) == 2
    assert message in capsys.readouterr().err


def test_client_needs_a_prompt(capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["client"]) == 2
    assert "give a prompt or --ids" in capsys.readouterr().err
    assert cli_main(["client", "--ids", "1,x"]) == 2
    assert "--ids='1,x' is invalid" in capsys.readouterr().err
    assert cli_main(["client", "--timeout", "0", "Hi"]) == 2
    assert "--timeout=0.0 is invalid" in capsys.readouterr().err

