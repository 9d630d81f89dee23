# SPDX-License-Identifier: Apache-2.0
"""A real Triton Inference Server (PyTriton) in front of one GenerationEngine, on 127.0.0.1.

Two models share the engine (protocol.py has their inputs and outputs):
- `logquant_generate`: one response per request, over HTTP and gRPC; `instances` Triton
  instances (default: the engine's max_batch), so that many requests run at once (infer.py).
- `logquant_generate_stream`: decoupled, a response per token, over gRPC streaming or HTTP
  `generate_stream`; one instance drives any number of streams.

Lifecycle: start() starts the engine, then tritonserver, and records the tritonserver process
tree; stop() stops the engine (pending requests finish as "aborted"), then Triton, then kills by
PID whatever of that tree is still running.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from logquant_trt.serve import processes
from logquant_trt.serve.infer import GenerationService, Outputs
from logquant_trt.serve.protocol import INPUTS, MODEL_NAME, OUTPUTS, STREAM_MODEL_NAME, TensorSpec

logger = logging.getLogger(__name__)

_STUB_EXIT_GRACE_S = 3.0  # after tritonserver exits, how long its backend stubs get to exit before SIGKILL
_START_ATTEMPTS = 3  # tries at loading the models, for PyTriton's instance handshake race (_lost_handshake_race)


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """Ports on 127.0.0.1 (0 = any free port) and Triton settings."""

    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    instances: int | None = None  # of the one-response model; None = the engine's max_batch
    exit_timeout_s: int = 3  # Triton's wait at stop; in-flight requests are aborted before, so it only bounds unloading
    log_verbose: int = 0
    log_file: Path | None = None  # tritonserver's log; None = our stdout (PyTriton echoes every line)

    def problems(self) -> list[str]:
        """Why these settings cannot work; empty when they can."""
        found = []
        if self.instances is not None and not 1 <= self.instances <= 256:
            found.append(f"instances={self.instances} is invalid: must be in [1, 256]")
        if not isinstance(self.exit_timeout_s, int) or self.exit_timeout_s < 0:
            found.append(f"exit_timeout_s={self.exit_timeout_s!r} is invalid: must be an int >= 0")
        return found


class GenerationServer:
    """start() / stop(), or a context manager; serve_forever() blocks until SIGINT/SIGTERM."""

    def __init__(self, engine: Any, config: ServerConfig = ServerConfig()) -> None:
        problems = config.problems()
        if problems:
            raise ValueError("; ".join(problems))
        if config.instances is not None and config.instances < engine.max_batch:
            logger.warning("instances=%d < max_batch=%d: at most %d one-response requests run at once",
                           config.instances, engine.max_batch, config.instances)
        self.engine = engine
        self.config = config
        self.ports: dict[str, int] = {}
        self.start_seconds: float | None = None
        self._triton: Any = None
        self._service: GenerationService | None = None
        self._tree: list[psutil.Process] = []
        self._stop_requested = threading.Event()

    # -- addresses -----------------------------------------------------------------------------------------

    @property
    def http_url(self) -> str:
        return f"{processes.HOST}:{self.ports['http_port']}"

    @property
    def grpc_url(self) -> str:
        return f"{processes.HOST}:{self.ports['grpc_port']}"

    @property
    def metrics_url(self) -> str:
        return f"http://{processes.HOST}:{self.ports['metrics_port']}/metrics"

    @property
    def service(self) -> GenerationService | None:
        """The infer functions' shared state (in_flight, peak_in_flight) while started."""
        return self._service

    @property
    def tritonserver_pids(self) -> list[int]:
        """tritonserver and its backend stubs, as recorded at start."""
        return [p.pid for p in self._tree]

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> "GenerationServer":
        if self._triton is not None:
            raise RuntimeError("the server is already started")
        began = time.perf_counter()
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                self._start_once()
                break
            except Exception as error:  # _start_once has stopped what it started
                if attempt == _START_ATTEMPTS or not _lost_handshake_race(error):
                    raise
                logger.warning("Triton could not load %s: an instance lost PyTriton's handshake race (attempt %d "
                               "of %d); starting again", MODEL_NAME, attempt, _START_ATTEMPTS)
        self.start_seconds = time.perf_counter() - began
        logger.info("Triton serving %s and %s on http://%s, grpc %s (%.1f s to start)",
                    MODEL_NAME, STREAM_MODEL_NAME, self.http_url, self.grpc_url, self.start_seconds)
        return self

    def stop(self) -> None:
        """Idempotent. Refuses new requests, aborts pending ones, stops Triton, kills leftovers of its tree by PID."""
        if self._service is not None:
            self._service.close()
            self._service = None
        self.engine.stop()
        if self._triton is not None:
            if not self._tree:  # start failed midway: record what runs, if anything
                pid = self._tritonserver_pid()
                self._tree = processes.process_tree(pid) if pid is not None else []
            try:
                # Returns once tritonserver has exited. Triton 2.51 never finishes unloading a Python-backend model
                # that has served a request (its finalize is not called; cf. triton-inference-server/server#8755),
                # so it logs "Exit timeout expired" after exit_timeout_s and leaves the stubs to exit on their own.
                self._triton.stop()
            finally:
                if not processes.wait_gone(self._tree, timeout_s=_STUB_EXIT_GRACE_S):
                    killed = processes.kill_leftovers(self._tree)
                    logger.warning("killed leftover Triton processes (PIDs %s)", killed)
            self._triton = None
            self._tree = []

    def serve_forever(self, poll_s: float = 1.0) -> None:
        """Block until SIGINT/SIGTERM (or Triton dies), then stop()."""
        previous = {sig: signal.signal(sig, lambda *_: self._stop_requested.set())
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not self._stop_requested.wait(poll_s):
                if self._triton is None or not self._triton.is_alive():
                    logger.error("Triton is no longer alive; stopping")
                    break
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop()

    def __enter__(self) -> "GenerationServer":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------------------------------

    def _start_once(self) -> None:
        from pytriton.triton import Triton, TritonConfig

        processes.prepare_library_path()
        self.ports = processes.resolve_ports({"http_port": self.config.http_port,
                                              "grpc_port": self.config.grpc_port,
                                              "metrics_port": self.config.metrics_port})
        triton_config = TritonConfig(http_address=processes.HOST, grpc_address=processes.HOST,
                                     metrics_address=processes.HOST, **self.ports,
                                     exit_timeout_secs=self.config.exit_timeout_s,
                                     log_verbose=self.config.log_verbose, log_file=self.config.log_file)
        self.engine.start()
        self._service = GenerationService(self.engine)
        try:
            self._triton = Triton(config=triton_config)
            self._bind(self._service)
            self._triton.run()
            pid = self._tritonserver_pid()
            if pid is None:
                raise RuntimeError("cannot find the tritonserver process of this PyTriton version")
            self._tree = processes.process_tree(pid)
        except BaseException:
            self.stop()
            raise

    def _bind(self, service: GenerationService) -> None:
        from pytriton.model_config import ModelConfig

        instances = self.config.instances or self.engine.max_batch
        self._triton.bind(model_name=MODEL_NAME, infer_func=[_blocking_instance(service) for _ in range(instances)],
                          inputs=_tensors(INPUTS), outputs=_tensors(OUTPUTS),
                          config=ModelConfig(batching=False), strict=True)

        async def stream(requests: list[Any]) -> Any:
            async for responses in service.stream_infer(requests):
                yield responses

        self._triton.bind(model_name=STREAM_MODEL_NAME, infer_func=stream, inputs=_tensors(INPUTS),
                          outputs=_tensors(OUTPUTS), config=ModelConfig(batching=False, decoupled=True), strict=True)

    def _tritonserver_pid(self) -> int | None:
        # PyTriton keeps the child behind private attributes (0.7.0); without its PID we could not clean up by PID.
        running = getattr(getattr(self._triton, "_triton_server", None), "_tritonserver_running_cmd", None)
        return None if running is None else running.pid


def _blocking_instance(service: GenerationService) -> Callable[[list[Any]], list[Outputs]]:
    # A distinct function object per instance: PyTriton keys each instance's config by its callable.
    def infer(requests: list[Any]) -> list[Outputs]:
        return service.blocking_infer(requests)

    return infer


def _tensors(specs: tuple[TensorSpec, ...]) -> list[Any]:
    from pytriton.model_config import Tensor

    return [Tensor(name=s.name, dtype=s.numpy_dtype, shape=s.shape, optional=s.optional) for s in specs]


def _lost_handshake_race(error: Exception) -> bool:
    """Whether loading failed because an instance of a multi-instance model lost PyTriton's (0.7.0) handshake race.

    Instances after the first read their config from a Unix socket that the first instance serves, and Triton
    initializes instances in parallel: a late socket, or one bound but not yet listening, fails the load with
    ConnectionRefusedError or a timeout inside get_config_from_handshake_server (seen on a loaded 2-core machine).
    """
    return "get_config_from_handshake_server" in str(error)
