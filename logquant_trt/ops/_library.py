# SPDX-License-Identifier: Apache-2.0
"""Loads liblogquant_kernels.so (built by `make kernels`) once, through ctypes.

Every logquant_* C function returns an int32 status; `check` turns a nonzero one into
a RuntimeError carrying the library's message (logquant_last_error()).
The library links its own CUDA runtime, whose current device does not follow torch's:
call `set_device` before each launch (cheap), as the ops of this package do.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import torch

LIBRARY_ENV = "LOGQUANT_KERNELS_LIB"
_REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LIBRARY = _REPO_ROOT / "build" / "cpp" / "liblogquant_kernels.so"


def library_path() -> Path:
    """$LOGQUANT_KERNELS_LIB if set, else build/cpp/liblogquant_kernels.so under the repo root."""
    return Path(os.environ.get(LIBRARY_ENV) or DEFAULT_LIBRARY)


@functools.cache
def load_library() -> ctypes.CDLL:
    path = library_path()
    if not path.is_file():
        raise RuntimeError(f"CUDA kernels not found at {path}: run `make kernels` in {_REPO_ROOT} "
                           f"(or point ${LIBRARY_ENV} at a built liblogquant_kernels.so)")
    lib = ctypes.CDLL(str(path))
    lib.logquant_last_error.argtypes = []
    lib.logquant_last_error.restype = ctypes.c_char_p
    lib.logquant_set_device.argtypes = [ctypes.c_int32]
    lib.logquant_set_device.restype = ctypes.c_int32
    return lib


def check(status: int) -> None:
    """Raise RuntimeError(<message of the failed call>) if status != 0."""
    if status != 0:
        message = load_library().logquant_last_error().decode(errors="replace")
        raise RuntimeError(f"logquant kernel call failed (status {status}): {message}")


def set_device(device: torch.device) -> None:
    """Make the CUDA `device` current in the library's runtime, for this thread."""
    check(load_library().logquant_set_device(device.index if device.index is not None else 0))


def current_stream(device: torch.device) -> ctypes.c_void_p:
    """torch's current stream on `device`, as the cudaStream_t argument of a logquant_* function."""
    return ctypes.c_void_p(torch.cuda.current_stream(device).cuda_stream)
