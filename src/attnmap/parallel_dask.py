"""The Dask side of `attnmap.parallel.run_tasks`: a client for a local or remote cluster, tasks
submitted and collected, per-stage progress bars from the tasks' events, threads per host.

Split from `attnmap.parallel` so that a one-worker run (in-process) never imports dask.distributed.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from attnmap import parallel
from attnmap.errors import InputError
from attnmap.parallel import STAGE_TOPIC, RunReport, item_unit, record_outcome, run_item
from attnmap.stop_signals import blocked_stop_signals

# Dask settings for a local cluster (scheduler, nannies and workers share this machine's cores with
# the slides). Dask's nanny starts every worker with MALLOC_TRIM_THRESHOLD_=65536 so that idle
# workers hand memory back to the OS, and setting it also switches off glibc's adaptive mmap
# threshold, so every array over 128 KiB (patch batches, heatmap canvases, PNG buffers) is mapped
# afresh and page-faulted in: a small slide then costs several times the page faults and more CPU in
# a worker than without the setting (`bench/cohort.py --compare-dask-defaults` measures it). A slide
# worker allocates the same sizes slide after slide, so reusing freed memory is what it wants. The
# workers' sampling profiler (every 10 ms) and the system monitor (every 500 ms) feed a dashboard
# that a local run does not start. The event-loop health tick (every 20 ms) and the memory monitor
# (every 100 ms) run in every process: at the defaults an idle 2-worker cluster keeps several
# percent of a core busy that the slides could use. The slower memory monitor still stops a worker
# that outgrows its limit, half a second later at most. Workers ignore Ctrl-C, SIGTERM and SIGHUP
# sent to the whole process group, and draw their bars under a thread lock (`attnmap.dask_worker`).
LOCAL_CLUSTER_CONFIG: dict[str, Any] = {
    "distributed.worker.preload": ["attnmap.dask_worker"],
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.memory.monitor-interval": "500ms",
}


def local_cluster(workers: int) -> Any:
    """A loopback LocalCluster of ``workers`` single-threaded worker processes, as `run_tasks` starts."""
    import dask
    from distributed import LocalCluster

    with dask.config.set(LOCAL_CLUSTER_CONFIG):
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            # its HTTP routes on a free loopback port: on the default 8787, taken by another run or a
            # notebook's dashboard, the start printed a warning into the run's output
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.ERROR,
        )


def submit_and_collect(
    client: Any,
    fn: Callable[[Any], dict],
    items: list[Any],
    todo: list[int],
    run_report: RunReport,
    retries: int,
    desc: str,
    progress: bool,
    save: Callable[[], None],
    threads: int | Mapping[str, int],
    stages: Sequence[str] | None,
) -> dict[str, int]:
    """Run the ``todo`` items on the cluster, recording each outcome as it arrives; returns how many
    items finished each of ``stages`` (from the tasks' own records: a task rerun after its worker
    died counts once)."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    counts: dict[str, int] = dict.fromkeys(stages or [], 0)
    announce = progress and bool(counts)  # live stage events only where bars show them
    futures = {}
    for index in todo:
        future = client.submit(
            run_item,
            fn,
            items[index],
            threads,
            announce,
            retries=retries,
            pure=False,
            key=f"attnmap-{index}-{time.time_ns()}",
        )
        futures[future] = index
    with tqdm(total=len(todo), desc=desc, unit=item_unit(desc), disable=not progress) as bar:
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except Exception as error:  # noqa: BLE001 - e.g. a worker killed more than `retries` times
                outcome = {
                    "status": "failed",
                    "error_type": type(error).__name__,
                    "message": str(error),
                    "traceback": "".join(traceback.format_exception(error)),
                }
            record_outcome(run_report.items[futures[future]], outcome)
            for stage in outcome.get("stages") or []:
                if stage in counts:
                    counts[stage] += 1
            bar.update(1)
            bar.set_postfix(failed=len(run_report.failed))
            save()
    return counts


def tasks_per_host(client: Any) -> dict[str, int]:
    """{host: dask threads on that host}: how many tasks each machine runs at once."""
    counts: dict[str, int] = {}
    for info in client.scheduler_info().get("workers", {}).values():
        host = str(info.get("host") or urlsplit(str(info.get("id", ""))).hostname or "")
        counts[host] = counts.get(host, 0) + int(info.get("nthreads", 1) or 1)
    return counts


class StageBars:
    """Live progress bars, one per stage, from the `STAGE_TOPIC` events tasks send (`report_stage`)
    when ``progress`` is on; nothing otherwise. A stage rerun after a worker died sends its event
    again, so a bar is capped at the number of items (the run report counts from the tasks' records).
    """

    def __init__(self, client: Any, stages: Sequence[str] | None, total: int, progress: bool) -> None:
        self.client, self.stages, self.total, self.progress = client, list(stages or []), total, progress
        self.counts: dict[str, int] = dict.fromkeys(self.stages, 0)
        self.expected: dict[str, int] = dict.fromkeys(self.stages, total)  # set to the records' counts
        self.bars: dict[str, Any] = {}

    def __enter__(self) -> StageBars:
        if not self.stages or not self.progress:
            return self
        from tqdm.auto import tqdm

        self.bars = {
            name: tqdm(
                total=self.total,
                desc=f"  {name}",
                unit="item",
                position=index + 1,
                leave=False,
            )
            for index, name in enumerate(self.stages)
        }
        self.client.subscribe_topic(STAGE_TOPIC, self._advance)
        return self

    def _advance(self, event: tuple[float, Any]) -> None:
        stage = event[1].get("stage") if isinstance(event[1], dict) else None
        if stage in self.counts and self.counts[stage] < self.total:
            self.counts[stage] += 1
            self.bars[stage].update(1)

    def __exit__(self, *exc_info: object) -> None:
        if not self.bars:
            return
        deadline = time.monotonic() + 3.0  # events travel via the scheduler: let the last ones arrive

        def behind() -> bool:
            return any(self.counts[name] < min(self.total, self.expected[name]) for name in self.stages)

        while exc_info[0] is None and behind() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.client.unsubscribe_topic(STAGE_TOPIC)
        for bar in self.bars.values():
            bar.close()


def stop_workers_now(cluster: Any) -> None:
    """Kill a local cluster's worker processes, their nannies told not to restart them.

    Why: closing the cluster asks each worker to finish and waits 4 s before killing it, and a task
    in a worker thread does not stop when asked: a stopped run would take that long to exit (more
    than a scheduler's grace period on a busy machine). Their half-written files are temporaries,
    which `attnmap.io_utils.remove_stale_temporaries` deletes once their writer is gone."""
    import os
    import signal

    for nanny in list(getattr(cluster, "workers", {}).values()):
        pid = getattr(nanny, "pid", None)
        if not hasattr(nanny, "close_gracefully") or not isinstance(pid, int):
            continue
        nanny.close_gracefully(reason="attnmap-stopped")  # a worker that exits now is not restarted
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def start_local_cluster(workers: int, client_class: Any) -> tuple[Any, Any]:
    """A started `local_cluster` and its client, every worker up; a stop meanwhile ends it at once.

    Why a thread: Dask cannot close a cluster half-started, and starting one takes seconds (each
    worker process imports Python afresh; 35 s on a loaded machine), so the start runs in a thread
    of its own while this one waits, and a Ctrl-C, SIGTERM or SIGHUP kills the processes the start
    made so far (they hold nothing of the run's) and is raised here at once. The starting thread
    holds these signals blocked, which the processes it starts inherit: the terminal's Ctrl-C to the
    process group must not reach a worker before its preload ignores it."""
    import psutil

    this = psutil.Process()
    before = {child.pid for child in this.children(recursive=True)}
    clusters_before = set(_cluster_registry())
    nannies_before = set(_nanny_registry())
    started: dict[str, Any] = {}

    def start() -> None:
        try:
            started["cluster"] = local_cluster(workers)
            started["client"] = client_class(started["cluster"])
            started["client"].wait_for_workers(workers)  # every worker counted when sharing the cores
        except BaseException as error:  # noqa: BLE001 - handed to the waiting thread
            started["error"] = error

    # multiprocessing's resource tracker, started here rather than by the cluster's start: starting
    # it unblocks SIGINT and SIGTERM in the thread that does, and the worker processes that thread
    # started after it would take a Ctrl-C to the process group while Python starts in them
    start_resource_tracker()
    thread = threading.Thread(target=start, name="attnmap-cluster-start", daemon=True)
    try:
        with blocked_stop_signals():  # the thread, and the processes it starts, inherit the mask
            thread.start()
        while thread.is_alive():
            thread.join(0.05)  # a signal's handler runs between these waits
    except BaseException:
        logging.getLogger("distributed").setLevel(logging.CRITICAL)  # the start failing under it
        # the start gives up once its processes are gone; one it spawns meanwhile goes too
        deadline = time.monotonic() + 3.0
        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C while this cleans up
            while thread.is_alive() and time.monotonic() < deadline:
                _kill_spawned(this, before, nannies_before)
                thread.join(0.05)
            _kill_spawned(this, before, nannies_before)
        _forget_clusters(clusters_before)
        # at exit, before Dask's own hook (registered earlier, so run later): a cluster registered
        # since, and a worker process a nanny was still starting, which would print its traceback
        # when it finds this process gone
        atexit.register(_forget_clusters, clusters_before)
        atexit.register(_kill_spawned_at_exit, this, before, nannies_before)
        raise
    if "error" in started:
        for part in ("client", "cluster"):
            if part in started:
                with contextlib.suppress(Exception):
                    started[part].close()
        raise started["error"]
    return started["cluster"], started["client"]


TRACKER_LEAK_NOTE = "ignore:resource_tracker:UserWarning"
"""The resource tracker's warning filter (a ``-W`` option): its "There appear to be 1 leaked
semaphore objects to clean up at shutdown", printed after the run's stop line when a stop killed
the workers of a cluster still starting. The tracker unlinks the semaphore as it says so: nothing
is left for the user to do, and the line made the stop look like a crash."""


def start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker (if not running) with `TRACKER_LEAK_NOTE`.

    The tracker is a process of its own, started with this interpreter's ``-W`` options
    (``sys.warnoptions``); a filter set later in this process does not reach it."""
    import sys
    from multiprocessing import resource_tracker

    if TRACKER_LEAK_NOTE not in sys.warnoptions:
        sys.warnoptions.append(TRACKER_LEAK_NOTE)
    resource_tracker.ensure_running()


def _cluster_registry() -> Any:
    """The clusters Dask closes when the process exits (``SpecCluster._instances``; empty if absent)."""
    from distributed.deploy.spec import SpecCluster

    return getattr(SpecCluster, "_instances", set())


def _forget_clusters(before: set[Any]) -> None:
    """Take the clusters made since ``before`` out of Dask's exit-time closing.

    Why: a cluster whose start was cut short (its processes killed, its event loop gone) is still
    registered, and Dask's own exit hook then tries to close it and prints the traceback of its
    failure after the run's stop line."""
    registry = _cluster_registry()
    for cluster in list(registry):
        if cluster not in before:
            registry.discard(cluster)


def _nanny_registry() -> Any:
    """Dask's live nannies (``Nanny._instances``; empty if absent)."""
    from distributed import Nanny

    return getattr(Nanny, "_instances", set())


def _kill_spawned(process: Any, before: set[int], nannies_before: set[Any]) -> None:
    """Kill the processes started under ``process`` since ``before`` (Dask's worker processes, also
    one forked and not yet running its program) but multiprocessing's resource tracker, which the
    start may have started too and which must outlive them. The nannies made since
    ``nannies_before`` are told first not to restart them: a nanny whose worker had come up would
    start a new one, which finds this process gone and prints its traceback after the stop line."""
    import psutil

    for nanny in list(_nanny_registry()):
        if nanny not in nannies_before:
            with contextlib.suppress(Exception):
                nanny.close_gracefully(reason="attnmap-stopped")
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.pid not in before and not any("resource_tracker" in part for part in child.cmdline()):
                child.kill()


def _kill_spawned_at_exit(process: Any, before: set[int], nannies_before: set[Any]) -> None:
    """`_kill_spawned` at the process's exit, sparing the workers of the clusters Dask still has
    registered (one started later in the same process: Dask's exit hook closes it)."""
    clusters = list(_cluster_registry())
    live = [nanny for cluster in clusters for nanny in getattr(cluster, "workers", {}).values()]
    pids = {nanny.pid for nanny in live if isinstance(getattr(nanny, "pid", None), int)}
    _kill_spawned(process, before | pids, nannies_before | set(live))


class DaskClient:
    """A dask Client for a fresh loopback LocalCluster or an existing scheduler; closed on exit."""

    def __init__(self, workers: int, scheduler: str | None) -> None:
        self.workers = workers
        self.scheduler = scheduler
        self.cluster: Any = None
        self.client: Any = None

    def __enter__(self) -> Any:
        try:
            from distributed import Client
        except ImportError as error:  # pragma: no cover - dask is in the [dist] extra
            raise InputError("parallel runs need dask.distributed: pip install 'attnmap[dist]'") from error
        if self.scheduler is not None:
            try:
                self.client = Client(self.scheduler, timeout=parallel.SCHEDULER_TIMEOUT)
            except OSError as error:
                raise InputError(f"cannot reach the Dask scheduler at {self.scheduler}: {error}") from error
            return self.client
        try:
            self.cluster, self.client = start_local_cluster(self.workers, Client)
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self.client

    def __exit__(self, *exc_info: object) -> None:
        if isinstance(exc_info[1], KeyboardInterrupt):  # Ctrl-C, SIGTERM, SIGHUP: stop quietly
            # the cluster's processes log the tasks cut short and the connections closed under them
            logging.getLogger("distributed").setLevel(logging.CRITICAL)
            if self.cluster is not None:
                stop_workers_now(self.cluster)
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
