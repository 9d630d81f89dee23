# SPDX-License-Identifier: Apache-2.0
"""Run a benchmark phase at the largest batch that fits: on device out-of-memory, retry with fewer rows."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Generic, TypeVar

import torch

T = TypeVar("T")


@dataclasses.dataclass
class Fitted(Generic[T]):
    """How retry_with_fewer_rows ended: the attempt's result (None if no batch fit) and the batches that did not."""

    result: T | None
    oom_rows: list[int]
    first_error: str  # first sentence of the first out-of-memory message, "" if none


def empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def retry_with_fewer_rows(attempt: Callable[[int], T], rows: int, shrink: Callable[[int], int],
                          device: torch.device, max_ooms: int | None = None) -> Fitted[T]:
    """attempt(rows); each time it runs out of device memory, try again with rows - shrink(rows), until an attempt
    returns, rows falls below 1 or `max_ooms` attempts (None: no limit) have run out of memory."""
    oom_rows: list[int] = []
    first_error = ""
    while rows >= 1:
        try:
            return Fitted(attempt(rows), oom_rows, first_error)
        except torch.OutOfMemoryError as error:
            oom_rows.append(rows)
            first_error = first_error or str(error).split(". ")[0]
        # Only now, with the exception gone, are the failed attempt's tensors (held by its traceback's frames)
        # free for the allocator to give back.
        empty_cache(device)
        if max_ooms is not None and len(oom_rows) >= max_ooms:
            break
        rows -= shrink(rows)
    return Fitted(None, oom_rows, first_error)
