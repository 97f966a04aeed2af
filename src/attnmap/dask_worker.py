"""What a worker process of a local Dask cluster (`attnmap.parallel_dask`) sets up as it starts:
Dask loads this module as the workers' preload and calls `dask_setup`.

- Ctrl-C, SIGTERM and SIGHUP are ignored (`attnmap.stop_signals`): they reach the workers with
  the terminal's process group, and the run that started them stops them.
- tqdm's write lock is a thread lock. By default the first bar a process makes creates a
  multiprocessing lock as well (for bars of several processes sharing one terminal), a semaphore
  registered with the resource tracker the workers share with the run. A stopped run kills its busy
  workers at once, so the semaphore is never released, and the tracker printed "There appear to
  be N leaked semaphore objects to clean up at shutdown" as the run exited. A worker's bars are
  its own process's (the run draws the stage bars from the tasks' events), so a thread lock is
  all they need.
"""

from __future__ import annotations

import threading
from typing import Any

from attnmap.stop_signals import ignore_stop_signals


def dask_setup(worker: Any) -> None:
    """Dask worker preload hook (``distributed.worker.preload``)."""
    from tqdm import tqdm

    ignore_stop_signals()
    tqdm.set_lock(threading.RLock())
