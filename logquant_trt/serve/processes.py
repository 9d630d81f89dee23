# SPDX-License-Identifier: Apache-2.0
"""What the tritonserver child process needs from us, and how we make sure it is gone.

- LD_LIBRARY_PATH: the Python-backend stub links libpython; without the running interpreter's
  LIBDIR first on the path it picks the system libpython and model loading fails (NOTES §5).
  PyTriton copies our environment into the child, so setting it in os.environ before start is enough.
- Free ports: tritonserver cannot report an OS-chosen port back, so "0" is resolved here by binding
  127.0.0.1:0 and releasing the port just before Triton takes it.
- Clean exit: a SIGINT/SIGTERM to tritonserver can leave it, or its backend stubs, running
  (NOTES §5), so the server records every PID of the tree once it is up and kills leftovers by PID.
"""

from __future__ import annotations

import os
import socket
import sysconfig
import time

import psutil

HOST = "127.0.0.1"


def prepare_library_path() -> None:
    """Put this interpreter's LIBDIR first on LD_LIBRARY_PATH (idempotent)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir:
        return
    current = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if current[:1] != [libdir]:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *(p for p in current if p != libdir)])


def resolve_ports(ports: dict[str, int]) -> dict[str, int]:
    """Each port as given, or a free one on 127.0.0.1 where it is 0; ValueError naming a bad, busy or repeated one."""
    for name, port in ports.items():
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"{name}={port!r} is invalid: must be a port number in [0, 65535] (0 = any free port)")
    fixed = [p for p in ports.values() if p]
    if len(set(fixed)) != len(fixed):
        raise ValueError(f"ports must differ: {ports}")
    # Hold every picked socket open until all are chosen, so two picks cannot return the same port.
    # A fixed port is bound once too: tritonserver would exit on a busy port, and PyTriton notice only after a minute.
    held: list[socket.socket] = []
    resolved = {}
    try:
        for name, port in ports.items():
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            try:
                sock.bind((HOST, port))
            except OSError as error:
                raise ValueError(f"{name}={port} is unavailable on {HOST}: {error.strerror}") from None
            resolved[name] = sock.getsockname()[1]
    finally:
        for sock in held:
            sock.close()
    return resolved


def process_tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants (empty if it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def kill_leftovers(processes: list[psutil.Process], timeout_s: float = 5.0) -> list[str]:
    """SIGKILL whichever of `processes` still run (by PID, checked against their start time); returns "PID (name)"."""
    alive = [p for p in processes if is_alive(p)]
    described = [f"{p.pid} ({_name(p)})" for p in alive]
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=timeout_s)
    return described


def wait_gone(processes: list[psutil.Process], timeout_s: float) -> bool:
    """True once none of `processes` runs; False if some still do after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while any(is_alive(p) for p in processes):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def is_alive(process: psutil.Process) -> bool:
    # is_running() compares the start time too, so a recycled PID is not mistaken for our process.
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _name(process: psutil.Process) -> str:
    try:
        return process.name()
    except psutil.NoSuchProcess:
        return "gone"
