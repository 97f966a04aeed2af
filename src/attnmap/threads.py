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
import time
from collections.abc import Iterator
from pathlib import Path


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


def _core_times() -> dict[int, tuple[int, int]] | None:
    """{core: (busy, total) clock ticks since boot} from /proc/stat, or None where it is unreadable."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    times = {}
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and len(fields) >= 5:
            ticks = [int(value) for value in fields[:8]]  # guest time is already inside user time
            idle = ticks[3] + ticks[4]  # idle and waiting for I/O
            times[int(name[3:])] = (sum(ticks) - idle, sum(ticks))
    return times or None


def idle_cores(sample_seconds: float = 0.2) -> int:
    """Available cores that other processes are not using now, at least 1.

    Measured over ``sample_seconds`` while this process waits: the busy share of each core it may
    run on, from /proc/stat (all available cores where that cannot be read). Why: OpenMP threads
    wait for each other at every parallel region, so on a busy machine one descheduled thread
    stalls the rest, and fewer threads than cores finish sooner. Why now rather than the load
    average: the 1-minute load average still counts a job that ended a minute ago, and a run
    started right after a heavy one would use half the machine for nothing.
    """
    cores = available_cores()
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):  # not Linux
        return cores
    before = _core_times()
    if before is None:
        return cores
    time.sleep(sample_seconds)
    after = _core_times() or {}
    busy = 0.0
    for core in allowed:
        if core in before and core in after:
            elapsed = after[core][1] - before[core][1]
            busy += (after[core][0] - before[core][0]) / elapsed if elapsed > 0 else 0.0
    return max(1, min(cores, int(cores - busy + 0.5)))


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
