"""How many compute threads attnmap may use, and setting torch/OpenCV to that number.

Why a module of its own: torch's default thread count is the machine's core count, not the cores
this process may run on (``os.sched_getaffinity``: a container, ``taskset``, a batch slot). More
threads than cores makes OpenMP threads wait on each other, which on a shared machine turns
seconds into minutes. Every place that sizes a thread pool (the cohort runner, the demo, patch
prefetching) asks here, so they agree and never nest one pool of N threads inside another.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux: no affinity masks
        return max(1, os.cpu_count() or 1)


def threads_per_task(concurrent_tasks: int, cores: int | None = None) -> int:
    """Compute threads for each of ``concurrent_tasks`` tasks sharing ``cores`` (default: this process's)."""
    cores = available_cores() if cores is None else cores
    return max(1, cores // max(1, int(concurrent_tasks)))


def idle_cores(own_load: float = 1.0) -> int:
    """Available cores that other processes are not already using, at least 1.

    From the 1-minute load average less ``own_load`` (this process's own share of it). Why: OpenMP
    threads wait for each other at every parallel region, so on a busy machine one descheduled
    thread stalls the rest, and fewer threads than cores finish sooner.
    """
    cores = available_cores()
    try:
        others = max(0.0, os.getloadavg()[0] - own_load)
    except (AttributeError, OSError):  # no load average on this platform
        return cores
    return max(1, min(cores, int(cores - others + 0.5)))


def default_torch_threads() -> int:
    """torch's thread count, capped at the available cores (torch counts the machine's cores)."""
    import torch

    return max(1, min(torch.get_num_threads(), available_cores()))


def set_compute_threads(threads: int) -> None:
    """Set torch's intra-op threads and OpenCV's to ``threads``."""
    import torch

    torch.set_num_threads(max(1, int(threads)))
    try:
        import cv2

        cv2.setNumThreads(max(1, int(threads)))
    except ImportError:  # pragma: no cover - OpenCV is a dependency
        pass


@contextlib.contextmanager
def compute_threads(threads: int) -> Iterator[int]:
    """Within the block torch and OpenCV use ``threads`` threads; the previous counts come back after."""
    import torch

    previous = torch.get_num_threads()
    try:
        import cv2

        previous_cv = cv2.getNumThreads()
    except ImportError:  # pragma: no cover
        previous_cv = None
    set_compute_threads(threads)
    try:
        yield int(threads)
    finally:
        torch.set_num_threads(previous)
        if previous_cv is not None:
            import cv2

            cv2.setNumThreads(previous_cv)
