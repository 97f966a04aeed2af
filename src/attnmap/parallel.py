"""Running one function over many inputs (slides, image folders) in parallel on dask.distributed.

Why one code path for 1 and N workers: a cohort run that works with ``--workers 1`` must behave the
same with 16 or on a cluster, so every item goes through the same `run_item` (errors recorded,
results made JSON-safe). One local worker runs in this process: a Dask cluster's start-up (process
spawn, imports, a scheduler) costs seconds a one-slide run never earns back. Each task's torch and
OpenCV use ``cores ÷ concurrent tasks`` threads (`attnmap.threads`), so one worker gets the whole
machine and N workers share it without oversubscribing it.

Robustness comes from three rules:
- a task whose worker dies is rescheduled by dask on another worker (``retries`` + the scheduler's
  allowed failures), and outputs are written atomically (`attnmap.io_utils`), so a rerun never
  sees a half-written file;
- an exception inside ``fn`` is caught on the worker and recorded (type, message, traceback) in
  the run report; the other items go on;
- items whose outputs are already complete (``is_complete``) are skipped, so an interrupted run
  continues where it stopped.
"""

from __future__ import annotations

import json
import os
import threading
import time
import traceback
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from attnmap.errors import InputError
from attnmap.io_utils import write_json_atomic
from attnmap.threads import compute_threads, set_compute_threads, threads_per_task

# How long to wait for an existing scheduler before giving up with a clear error.
SCHEDULER_TIMEOUT = "15s"

REPORT_INTERVAL_S = 1.0
"""Least time between two rewrites of the run report while items finish. Each rewrite serialises
the whole report, so rewriting it after every item costs time quadratic in the number of items
(and that CPU is taken from the slides); a finished item's outputs are on disk whatever the report
says, and the last rewrite, at the end of the run, is never skipped."""

# Dask event topic on which tasks announce finished stages (for the per-stage progress bars).
STAGE_TOPIC = "attnmap-stage"


@dataclass
class ItemResult:
    """What happened to one input: ``status`` is "done", "skipped" or "failed".

    ``item_id``: the name the input goes by besides ``item`` (its path), where it has one: a slide
    entry's id, which names its outputs and which a slide list may set apart from the file's name.
    Why recorded: a failed or pending item has no result saying it, and a reader of the report
    (the viewer, `wsi evaluate`) named such a slide by its file's stem, another name.
    """

    item: str
    status: str
    item_id: str | None = None
    result: dict[str, Any] | None = None
    error_type: str | None = None
    message: str | None = None
    traceback: str | None = None
    seconds: float | None = None


@dataclass
class RunReport:
    """The outcome of a cohort run, one `ItemResult` per input in input order."""

    items: list[ItemResult] = field(default_factory=list)
    workers: int = 1
    scheduler: str | None = None
    seconds: float = 0.0
    provenance: dict[str, str] = field(default_factory=dict)
    stage_counts: dict[str, int] = field(default_factory=dict)  # items that reached each stage (this run)
    warnings: list[str] = field(default_factory=list)  # said about the inputs before any item ran

    @property
    def done(self) -> list[ItemResult]:
        return [entry for entry in self.items if entry.status == "done"]

    @property
    def skipped(self) -> list[ItemResult]:
        return [entry for entry in self.items if entry.status == "skipped"]

    @property
    def failed(self) -> list[ItemResult]:
        return [entry for entry in self.items if entry.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": {
                "total": len(self.items),
                "done": len(self.done),
                "skipped": len(self.skipped),
                "failed": len(self.failed),
                "pending": sum(entry.status == "pending" for entry in self.items),
                "workers": self.workers,
                "scheduler": self.scheduler,
                "seconds": round(self.seconds, 3),
                "stage_counts": self.stage_counts,
            },
            "provenance": self.provenance,
            "warnings": self.warnings,
            "items": [asdict(entry) for entry in self.items],
        }

    def save(self, path: str | Path) -> Path:
        """Write the report as JSON (atomically)."""
        return write_json_atomic(path, self.to_dict())


def item_unit(desc: str) -> str:
    """The progress bar's unit for a bar called ``desc`` (a plural): its singular, so that the rate
    reads "image batch/s", not "image batche/s"."""
    for plural, singular in (("ches", "ch"), ("shes", "sh"), ("sses", "ss"), ("xes", "x"), ("s", "")):
        if desc.endswith(plural) and len(desc) > len(plural):
            return desc[: -len(plural)] + singular
    return desc or "item"


def describe_item(item: object) -> str:
    """A stable string naming an item in the report: paths as they are, tuples by their first part,
    objects with a ``path`` attribute (e.g. a slide entry) by that path."""
    if isinstance(item, (tuple, list)) and item:
        return describe_item(item[0])
    path = getattr(item, "path", None)
    if isinstance(path, (str, Path)):
        return str(path)
    return str(item)


def describe_item_id(item: object) -> str | None:
    """The name an item goes by besides its path (`ItemResult.item_id`): a ``slide_id`` attribute
    (a slide entry's), else None."""
    value = getattr(item, "slide_id", None)
    return None if value is None else str(value)


def run_item(
    fn: Callable[[Any], dict],
    item: Any,
    threads: int | Mapping[str, int] | None = None,
    announce: bool = False,
) -> dict[str, Any]:
    """Run ``fn(item)``, turning an exception into a record instead of a task failure.

    Top level (not a closure) so dask pickles it by reference. ``threads``: torch/OpenCV threads for
    the task, or {host: concurrent tasks on that host} so that a dask worker takes its share of its
    own machine's cores; None leaves the thread counts as they are. Spreads workers over the GPUs.
    The record lists the stages ``fn`` finished (`report_stage`); ``announce`` also sends each one
    to the client as it happens, for live progress bars.
    """
    if threads is not None:
        _configure_worker(threads)
    _TASK.stages, _TASK.announce = [], announce
    start = time.perf_counter()
    try:
        result = fn(item)
    except Exception as error:  # noqa: BLE001 - recorded in the run report, the run goes on
        return {
            "status": "failed",
            "error_type": type(error).__name__,
            "message": str(error),
            "traceback": traceback.format_exc(),
            "seconds": time.perf_counter() - start,
            "stages": _TASK.stages,
        }
    finally:
        stages, _TASK.stages = _TASK.stages, None
    seconds = time.perf_counter() - start
    return {"status": "done", "result": _jsonable(result), "seconds": seconds, "stages": stages}


# The task running in this thread (dask runs a worker's tasks in threads): the stages it finished
# and whether to announce them. A stage event wakes the worker's event loop and costs the task about
# a millisecond, so events are sent only when a client shows them.
_TASK = threading.local()

# Set while items run in this process: `report_stage` calls it instead of sending a dask event.
_STAGE_LISTENER: Callable[[str], None] | None = None


def report_stage(stage: str) -> None:
    """Announce that the running task finished ``stage`` (drives `run_tasks`' per-stage bars).

    A no-op outside `run_tasks`, so task functions can call it unconditionally.
    """
    if _STAGE_LISTENER is not None:
        _STAGE_LISTENER(stage)
        return
    stages = getattr(_TASK, "stages", None)
    if stages is None:  # not inside `run_item`
        return
    stages.append(stage)
    if not _TASK.announce:
        return
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return
    worker.log_event(STAGE_TOPIC, {"stage": stage})


def _worker_host() -> str | None:
    try:
        from distributed import get_worker

        return urlsplit(get_worker().address).hostname
    except (ImportError, ValueError):
        return None


def _configure_worker(threads: int | Mapping[str, int]) -> None:
    """Give this task its share of the cores (torch, OpenCV) and, with several GPUs, one of them."""
    if isinstance(threads, Mapping):  # a dask worker: share its host's cores among the host's tasks
        threads = threads_per_task(threads.get(_worker_host() or "", 1))
        os.environ["OMP_NUM_THREADS"] = str(threads)  # for libraries the task imports later
    set_compute_threads(threads)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    if torch.cuda.is_available() and torch.cuda.device_count() > 1:
        try:
            from distributed import get_worker

            name = get_worker().name
            index = int(name) if str(name).isdigit() else zlib.crc32(str(name).encode())
            torch.cuda.set_device(index % torch.cuda.device_count())
        except (ValueError, ImportError):
            pass


def _jsonable(result: object) -> dict[str, Any] | None:
    if result is None:
        return None
    if not isinstance(result, dict):
        result = {"value": result}
    return json.loads(json.dumps(result, default=str))


def run_tasks(
    fn: Callable[[Any], dict],
    items: Iterable[Any],
    *,
    workers: int = 1,
    scheduler: str | None = None,
    report: str | Path | None = None,
    desc: str = "slides",
    is_complete: Callable[[Any], bool] | None = None,
    retries: int = 2,
    progress: bool = True,
    provenance: dict[str, str] | None = None,
    stages: Sequence[str] | None = None,
    threads: int | None = None,
    warnings: Sequence[str] = (),
) -> RunReport:
    """Run ``fn(item)`` for every item and return (and save) a `RunReport`.

    ``fn`` must be picklable (a top-level function, or ``functools.partial`` of one) and should be
    idempotent: it may run twice for one item when a worker dies mid-task. ``workers`` processes
    on a LocalCluster bound to 127.0.0.1, or the existing cluster at ``scheduler``; one local worker
    runs the items in this process (no cluster). ``threads``: torch/OpenCV threads per task
    (default: a host's cores ÷ the tasks it runs at once). Items for which
    ``is_complete(item)`` is true are skipped. ``report``: JSON path, rewritten as items finish (at
    most every `REPORT_INTERVAL_S`, and at the end) so an interrupted run still leaves a record.
    ``stages``: names ``fn`` announces with `report_stage`; each gets its own progress bar below the
    items' bar. ``warnings``: what was said about the inputs beforehand, kept in the report.
    """
    items = list(items)
    if scheduler is None and (not isinstance(workers, int) or workers < 1):
        raise InputError(f"workers must be a positive integer, got {workers!r}")
    if retries < 0:
        raise InputError(f"retries must be >= 0, got {retries}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise InputError(f"threads must be a positive integer, got {threads!r}")
    start = time.perf_counter()
    run_report = RunReport(
        workers=workers, scheduler=scheduler, provenance=dict(provenance or {}), warnings=list(warnings)
    )
    run_report.items = [
        ItemResult(item=describe_item(item), status="pending", item_id=describe_item_id(item))
        for item in items
    ]
    todo: list[int] = []
    for index, item in enumerate(items):
        if is_complete is not None and is_complete(item):
            run_report.items[index].status = "skipped"
        else:
            todo.append(index)

    last_save = -float("inf")

    def save(final: bool = False) -> None:
        nonlocal last_save
        now = time.perf_counter()
        run_report.seconds = now - start
        if report is not None and (final or now - last_save >= REPORT_INTERVAL_S):
            run_report.save(report)
            last_save = now

    save()
    if todo and scheduler is None and workers == 1:
        run_report.stage_counts = _run_in_process(
            fn, items, todo, run_report, threads, stages, desc, progress, save
        )
    elif todo:
        from attnmap.parallel_dask import DaskClient, StageBars, submit_and_collect, tasks_per_host

        with DaskClient(workers, scheduler) as client:
            if scheduler is not None:
                run_report.workers = len(client.scheduler_info().get("workers", {}))
            task_threads: int | dict[str, int] = threads if threads is not None else tasks_per_host(client)
            with StageBars(client, stages, len(todo), progress) as stage_bars:
                run_report.stage_counts = submit_and_collect(
                    client, fn, items, todo, run_report, retries, desc, progress, save, task_threads, stages
                )
                stage_bars.expected.update(run_report.stage_counts)
    save(final=True)
    return run_report


def record_outcome(entry: ItemResult, outcome: dict[str, Any]) -> None:
    """Copy a `run_item` outcome (or a failure built from a lost task) into the report's entry."""
    entry.status = outcome["status"]
    entry.result = outcome.get("result")
    entry.error_type = outcome.get("error_type")
    entry.message = outcome.get("message")
    entry.traceback = outcome.get("traceback")
    entry.seconds = outcome.get("seconds")


def _run_in_process(
    fn: Callable[[Any], dict],
    items: list[Any],
    todo: list[int],
    run_report: RunReport,
    threads: int | None,
    stages: Sequence[str] | None,
    desc: str,
    progress: bool,
    save: Callable[[], None],
) -> dict[str, int]:
    """One worker: the items one after another in this process, with every core; returns stage counts.

    The thread counts in force before are restored afterwards (this is a library call, not a worker).
    """
    global _STAGE_LISTENER
    from tqdm.auto import tqdm

    counts: dict[str, int] = dict.fromkeys(stages or [], 0)
    bars = {
        name: tqdm(
            total=len(todo),
            desc=f"  {name}",
            unit="item",
            position=index + 1,
            leave=False,
            disable=not progress,
        )
        for index, name in enumerate(counts)
    }

    def advance(stage: str) -> None:
        if stage in counts and counts[stage] < len(todo):
            counts[stage] += 1
            bars[stage].update(1)

    previous = _STAGE_LISTENER
    _STAGE_LISTENER = advance
    try:
        with (
            compute_threads(threads if threads is not None else threads_per_task(1)),
            tqdm(total=len(todo), desc=desc, unit=item_unit(desc), disable=not progress) as bar,
        ):
            for index in todo:
                record_outcome(run_report.items[index], run_item(fn, items[index]))
                bar.update(1)
                bar.set_postfix(failed=len(run_report.failed))
                save()
    finally:
        _STAGE_LISTENER = previous
        for stage_bar in bars.values():
            stage_bar.close()
    return counts
