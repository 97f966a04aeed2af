"""Running one function over many inputs (slides, image folders) in parallel on dask.distributed.

Why one code path for 1 and N workers: a cohort run that works with ``--workers 1`` must behave the
same with 16 or on a cluster, so both go through the same scheduler, the same worker setup
(one thread, seeded, ``torch.set_num_threads(1)``) and therefore give bitwise-identical outputs.

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
import logging
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from attnmap.errors import InputError
from attnmap.io_utils import write_json_atomic

# How long to wait for an existing scheduler before giving up with a clear error.
SCHEDULER_TIMEOUT = "15s"


@dataclass
class ItemResult:
    """What happened to one input: ``status`` is "done", "skipped" or "failed"."""

    item: str
    status: str
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
            },
            "provenance": self.provenance,
            "items": [asdict(entry) for entry in self.items],
        }

    def save(self, path: str | Path) -> Path:
        """Write the report as JSON (atomically)."""
        return write_json_atomic(path, self.to_dict())


def describe_item(item: object) -> str:
    """A stable string naming an item in the report: paths as they are, tuples by their first part,
    objects with a ``path`` attribute (e.g. a slide entry) by that path."""
    if isinstance(item, (tuple, list)) and item:
        return describe_item(item[0])
    path = getattr(item, "path", None)
    if isinstance(path, (str, Path)):
        return str(path)
    return str(item)


def run_item(fn: Callable[[Any], dict], item: Any) -> dict[str, Any]:
    """Run ``fn(item)`` on a worker, turning an exception into a record instead of a task failure.

    Top level (not a closure) so dask pickles it by reference. Pins torch to one thread for
    reproducible numbers whatever the worker count, and spreads workers over the visible GPUs.
    """
    _configure_worker()
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
        }
    return {"status": "done", "result": _jsonable(result), "seconds": time.perf_counter() - start}


def _configure_worker() -> None:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    torch.set_num_threads(1)
    if torch.cuda.is_available() and torch.cuda.device_count() > 1:
        try:
            from distributed import get_worker

            name = get_worker().name
            index = int(name) if str(name).isdigit() else abs(hash(str(name)))
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
) -> RunReport:
    """Run ``fn(item)`` for every item on dask.distributed and return (and save) a `RunReport`.

    ``fn`` must be picklable (a top-level function, or ``functools.partial`` of one) and should be
    idempotent: it may run twice for one item when a worker dies mid-task. ``workers`` processes
    on a LocalCluster bound to 127.0.0.1, or the existing cluster at ``scheduler``. Items for which
    ``is_complete(item)`` is true are skipped. ``report``: JSON path, rewritten as items finish so
    an interrupted run still leaves an accurate record.
    """
    items = list(items)
    if scheduler is None and (not isinstance(workers, int) or workers < 1):
        raise InputError(f"workers must be a positive integer, got {workers!r}")
    if retries < 0:
        raise InputError(f"retries must be >= 0, got {retries}")
    start = time.perf_counter()
    run_report = RunReport(workers=workers, scheduler=scheduler, provenance=dict(provenance or {}))
    run_report.items = [ItemResult(item=describe_item(item), status="pending") for item in items]
    todo: list[int] = []
    for index, item in enumerate(items):
        if is_complete is not None and is_complete(item):
            run_report.items[index].status = "skipped"
        else:
            todo.append(index)

    def save() -> None:
        run_report.seconds = time.perf_counter() - start
        if report is not None:
            run_report.save(report)

    save()
    if todo:
        with _DaskClient(workers, scheduler) as client:
            if scheduler is not None:
                run_report.workers = len(client.scheduler_info().get("workers", {}))
            _submit_and_collect(client, fn, items, todo, run_report, retries, desc, progress, save)
    save()
    return run_report


def _submit_and_collect(
    client: Any,
    fn: Callable[[Any], dict],
    items: list[Any],
    todo: list[int],
    run_report: RunReport,
    retries: int,
    desc: str,
    progress: bool,
    save: Callable[[], None],
) -> None:
    from distributed import as_completed
    from tqdm.auto import tqdm

    futures = {}
    for index in todo:
        future = client.submit(
            run_item, fn, items[index], retries=retries, pure=False, key=f"attnmap-{index}-{time.time_ns()}"
        )
        futures[future] = index
    with tqdm(total=len(todo), desc=desc, unit=desc.rstrip("s") or "item", disable=not progress) as bar:
        for future in as_completed(futures):
            entry = run_report.items[futures[future]]
            try:
                outcome = future.result()
            except Exception as error:  # noqa: BLE001 - e.g. a worker killed more than `retries` times
                outcome = {
                    "status": "failed",
                    "error_type": type(error).__name__,
                    "message": str(error),
                    "traceback": "".join(traceback.format_exception(error)),
                }
            entry.status = outcome["status"]
            entry.result = outcome.get("result")
            entry.error_type = outcome.get("error_type")
            entry.message = outcome.get("message")
            entry.traceback = outcome.get("traceback")
            entry.seconds = outcome.get("seconds")
            bar.update(1)
            bar.set_postfix(failed=len(run_report.failed))
            save()


class _DaskClient:
    """A dask Client for a fresh loopback LocalCluster or an existing scheduler; closed on exit."""

    def __init__(self, workers: int, scheduler: str | None) -> None:
        self.workers = workers
        self.scheduler = scheduler
        self.cluster: Any = None
        self.client: Any = None

    def __enter__(self) -> Any:
        try:
            from distributed import Client, LocalCluster
        except ImportError as error:  # pragma: no cover - dask is in the [dist] extra
            raise InputError("parallel runs need dask.distributed: pip install 'attnmap[dist]'") from error
        if self.scheduler is not None:
            try:
                self.client = Client(self.scheduler, timeout=SCHEDULER_TIMEOUT)
            except OSError as error:
                raise InputError(f"cannot reach the Dask scheduler at {self.scheduler}: {error}") from error
            return self.client
        self.cluster = LocalCluster(
            n_workers=self.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        self.client = Client(self.cluster)
        return self.client

    def __exit__(self, *exc_info: object) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
