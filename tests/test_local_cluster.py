"""The workers `run_tasks` starts on this machine: glibc's memory reuse left on, Dask's profiler off,
its periodic housekeeping slowed down."""

from __future__ import annotations

import os
import signal

import pytest

from attnmap.parallel import run_tasks
from attnmap.parallel_dask import LOCAL_CLUSTER_CONFIG


def worker_settings(item: int) -> dict:
    """A task: what the worker process it runs in was started with."""
    import dask

    return {
        "trim": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
        "profile": bool(dask.config.get("distributed.worker.profile.enabled")),
        "pid": os.getpid(),
        "tick": dask.config.get("distributed.admin.tick.interval"),
        "memory_monitor": dask.config.get("distributed.worker.memory.monitor-interval"),
        "signals": [signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)],
    }


@pytest.mark.slow
def test_local_workers_keep_glibc_memory_reuse(monkeypatch: pytest.MonkeyPatch) -> None:
    # an earlier Dask cluster in this process leaves its setting in os.environ, which children inherit
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    report = run_tasks(worker_settings, range(4), workers=2, progress=False)
    results = [entry.result for entry in report.items]
    assert all(entry.status == "done" for entry in report.items)
    assert {result["trim"] for result in results} == {None}
    assert {result["profile"] for result in results} == {False}
    assert {result["tick"] for result in results} == {LOCAL_CLUSTER_CONFIG["distributed.admin.tick.interval"]}
    monitor = LOCAL_CLUSTER_CONFIG["distributed.worker.memory.monitor-interval"]
    assert {result["memory_monitor"] for result in results} == {monitor}
    assert os.getpid() not in {result["pid"] for result in results}
    # the terminal's Ctrl-C and a scheduler's SIGTERM reach the whole process group: the run stops
    # its workers, which would otherwise print tracebacks and be restarted
    assert all(result["signals"] == [signal.SIG_IGN] * 3 for result in results)


def two_stages(item: int) -> dict:
    """A task that announces two stages, failing between them for item 3."""
    from attnmap.parallel import report_stage

    report_stage("first")
    if item == 3:
        raise ValueError("broken item")
    report_stage("second")
    return {"item": item}


@pytest.mark.slow
def test_stage_counts_come_from_the_tasks_and_events_only_feed_progress_bars() -> None:
    from distributed import Client

    from attnmap.parallel import STAGE_TOPIC
    from attnmap.parallel_dask import local_cluster

    with local_cluster(2) as cluster, Client(cluster) as client:
        for progress, events in ((False, 0), (True, 7)):
            report = run_tasks(
                two_stages, range(4), scheduler=cluster.scheduler_address, progress=progress,
                stages=["first", "second"],
            )
            assert [entry.status for entry in report.items] == ["done"] * 3 + ["failed"]
            assert report.stage_counts == {"first": 4, "second": 3}
            logged = client.get_events(STAGE_TOPIC)
            assert len(logged) == events  # each announced stage is an event; none without bars


def wait_then_say_pid(seconds: float) -> int:
    """A task that is still running when the run is stopped."""
    import time

    time.sleep(seconds)
    return os.getpid()


@pytest.mark.slow
def test_a_stopped_run_kills_its_busy_workers_at_once() -> None:
    import time

    import psutil

    from attnmap.parallel_dask import DaskClient

    with pytest.raises(KeyboardInterrupt), DaskClient(1, None) as client:  # noqa: PT012
        worker_pids = [client.submit(wait_then_say_pid, 0.0).result()]
        client.submit(wait_then_say_pid, 60.0)
        time.sleep(0.5)
        stopped = time.monotonic()
        raise KeyboardInterrupt  # Ctrl-C (or SIGTERM) while a task runs
    # closing asks a worker to finish and waits 4 s before killing it; a stopped run does not wait
    assert time.monotonic() - stopped < 3.0
    alive = [pid for pid in worker_pids if psutil.pid_exists(pid)
             and psutil.Process(pid).status() != "zombie"]
    assert alive == []


_STOPPED_WHILE_BUSY = """
import sys, time
from pathlib import Path
from attnmap.parallel_dask import DaskClient

def busy(folder):
    from tqdm.auto import tqdm
    for _ in tqdm(range(3), disable=True):  # any bar: tqdm makes its write lock with the first
        pass
    Path(folder, str(time.time_ns())).touch()
    time.sleep(60)

if __name__ == "__main__":
    folder = Path(sys.argv[1])
    try:
        with DaskClient(2, None) as client:
            futures = [client.submit(busy, str(folder), pure=False) for _ in range(2)]
            deadline = time.monotonic() + 60
            while len(list(folder.iterdir())) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            raise KeyboardInterrupt  # as Ctrl-C: the busy workers are killed
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
"""


@pytest.mark.slow
def test_a_two_worker_run_stopped_while_busy_leaks_no_semaphore(tmp_path) -> None:
    """Killed while busy, a worker's tqdm lock (a multiprocessing semaphore, registered with the
    resource tracker it shares with the run) was never released, and the tracker warned about leaked
    semaphores as the run exited. The workers' bars now use a thread lock (`attnmap.dask_worker`)."""
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("distributed")
    script, folder = tmp_path / "stopped_while_busy.py", tmp_path / "started"
    script.write_text(_STOPPED_WHILE_BUSY)
    folder.mkdir()
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(script), str(folder)], env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0 and len(list(folder.iterdir())) == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "stopped", done.stderr
    assert "leaked semaphore" not in done.stderr and "resource_tracker" not in done.stderr, done.stderr
