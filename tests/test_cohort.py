"""Cohort runs on dask.distributed: failures recorded, resumable, and robust to a worker killed mid-run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from synthetic_slide_files import write_pipeline_setup

from attnmap.errors import InputError
from attnmap.io_utils import TEMP_MARKER, read_png_text
from attnmap.parallel import run_tasks


def square_or_fail(item: tuple[int, str]) -> dict:
    """A task: writes ``<dir>/<n>.txt`` with n², fails for 3."""
    number, directory = item
    if number == 3:
        raise ValueError("three is not allowed")
    Path(directory, f"{number}.txt").write_text(str(number * number))
    return {"square": number * number}


@pytest.mark.slow
def test_failures_are_recorded_and_reruns_skip_finished_items(tmp_path: Path) -> None:
    from distributed import LocalCluster

    items = [(number, str(tmp_path)) for number in range(6)]
    report_path = tmp_path / "run_report.json"
    report = run_tasks(square_or_fail, items, workers=2, report=report_path, progress=False)
    assert [entry.status for entry in report.items] == ["done"] * 3 + ["failed"] + ["done"] * 2
    assert [entry.result for entry in report.done] == [{"square": n * n} for n in (0, 1, 2, 4, 5)]
    failed = report.failed[0]
    assert (failed.item, failed.error_type, failed.message) == ("3", "ValueError", "three is not allowed")
    assert "square_or_fail" in failed.traceback
    saved = json.loads(report_path.read_text())
    assert saved["summary"] == {**saved["summary"], "total": 6, "done": 5, "failed": 1, "skipped": 0}
    assert saved["provenance"] == {} and saved["items"][3]["error_type"] == "ValueError"

    def finished(item: tuple[int, str]) -> bool:
        return Path(item[1], f"{item[0]}.txt").is_file()

    Path(tmp_path, "4.txt").unlink()  # as if the run had stopped before item 4
    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as cluster:
        rerun = run_tasks(
            square_or_fail,
            items,
            scheduler=cluster.scheduler_address,
            report=report_path,
            is_complete=finished,
            progress=False,
        )
    assert [entry.status for entry in rerun.items] == ["skipped"] * 3 + ["failed", "done", "skipped"]
    assert rerun.workers == 1 and rerun.scheduler == cluster.scheduler_address
    all_skipped = run_tasks(square_or_fail, items[:2], workers=1, is_complete=finished, progress=False)
    assert [entry.status for entry in all_skipped.items] == ["skipped", "skipped"]  # no cluster needed


def test_bad_arguments_are_input_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("attnmap.parallel.SCHEDULER_TIMEOUT", "1s")
    with pytest.raises(InputError, match="workers must be a positive integer"):
        run_tasks(square_or_fail, [], workers=0)
    with pytest.raises(InputError, match="cannot reach the Dask scheduler"):
        run_tasks(square_or_fail, [(0, "/tmp")], scheduler="tcp://127.0.0.1:9", progress=False)


def run_slide_killed_once(entry, config, kill_marker: str, victim: str) -> dict:
    """`run_slide`, except that the first attempt on ``victim`` SIGKILLs its own worker mid-slide."""
    from attnmap.wsi.pipeline import run_slide

    if entry.slide_id == victim and not os.path.exists(kill_marker):
        Path(kill_marker).write_text(str(os.getpid()))
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGKILL)).start()
    return run_slide(entry, config)


def _tree(root: Path) -> dict[str, Path]:
    return {str(path.relative_to(root)): path for path in sorted(root.rglob("*")) if path.is_file()}


def _assert_same_outputs(first: Path, second: Path) -> None:
    files_a, files_b = _tree(first), _tree(second)
    assert sorted(files_a) == sorted(files_b)
    assert not [name for name in files_a if TEMP_MARKER in name]
    for name, path in files_a.items():
        other = files_b[name]
        if name.endswith(".h5"):
            with h5py.File(path, "r") as a, h5py.File(other, "r") as b:
                assert sorted(a) == sorted(b)
                for key in a:
                    assert np.array_equal(a[key][()], b[key][()]), f"{name}:{key} differs"
                    assert a[key].dtype == b[key].dtype
        elif name.endswith(".png"):
            assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(other))), name
            assert read_png_text(path)["attnmap_version"]
        elif name.endswith(".pt"):
            assert torch.equal(torch.load(path, weights_only=True), torch.load(other, weights_only=True))
        elif name.endswith("predictions.csv"):
            assert path.read_text() == other.read_text()


@pytest.mark.slow
def test_cohort_with_a_killed_worker_equals_a_one_worker_run(tmp_path: Path) -> None:
    import functools

    from distributed import Client, LocalCluster

    from attnmap.wsi.pipeline.cohort import run_cohort, write_predictions
    from attnmap.wsi.pipeline.config import load_config, read_slide_list

    config_path = write_pipeline_setup(tmp_path / "cohort", n_slides=6)
    serial = load_config(config_path, output_dir=str(tmp_path / "serial"))
    report = run_cohort(serial, workers=1, progress=False)
    assert [entry.status for entry in report.items] == ["done"] * 6
    assert set(report.stage_counts.values()) == {6} and len(report.stage_counts) == 6

    parallel = load_config(config_path, output_dir=str(tmp_path / "parallel"))
    entries = read_slide_list(parallel)
    marker = tmp_path / "killed.txt"
    task = functools.partial(
        run_slide_killed_once, config=parallel, kill_marker=str(marker), victim="slide_2"
    )
    with LocalCluster(
        n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None, processes=True
    ) as cluster:
        with Client(cluster) as probe:
            worker_pids = set(probe.run(os.getpid).values())
        killed = run_tasks(
            task,
            entries,
            scheduler=cluster.scheduler_address,
            progress=False,
            report=tmp_path / "parallel" / "run_report.json",
        )
    assert marker.is_file() and int(marker.read_text()) in worker_pids  # a worker really died mid-run
    assert [entry.status for entry in killed.items] == ["done"] * 6
    write_predictions(parallel, entries)
    serial_report = Path(serial.run.output_dir) / "run_report.json"
    parallel_report = Path(parallel.run.output_dir) / "run_report.json"
    assert json.loads(serial_report.read_text())["summary"]["done"] == 6
    assert json.loads(parallel_report.read_text())["summary"]["done"] == 6
    _assert_same_outputs(Path(serial.run.output_dir), Path(parallel.run.output_dir))
    # resumable: a second run finds every slide complete and does nothing
    again = run_cohort(serial, workers=1, progress=False)
    assert [entry.status for entry in again.items] == ["skipped"] * 6


def test_predictions_csv_takes_this_runs_files_by_the_fingerprint_their_tasks_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CSV written after the last task lists the slides its tasks finished by the fingerprint each
    reported, without recomputing fingerprints (opening every slide again while workers idle), and
    gives the same file as the recomputation; a prediction rewritten under another fingerprint since
    its task finished is left out, as the recomputation would leave it out."""
    from attnmap.fingerprint import FINGERPRINT_KEY
    from attnmap.stored import stored_record
    from attnmap.wsi.pipeline import cohort
    from attnmap.wsi.pipeline.config import load_config, read_slide_list
    from attnmap.wsi.pipeline.outputs import SlideOutputs
    from attnmap.wsi.pipeline.run import PREDICTION_FINGERPRINT

    setup = write_pipeline_setup(tmp_path / "cohort", n_slides=2)
    config = load_config(setup, output_dir=str(tmp_path / "out"))
    entries = read_slide_list(config)
    report = cohort.run_cohort(config, workers=1, progress=False)
    made = {
        entry.slide_id: item.result[PREDICTION_FINGERPRINT]
        for entry, item in zip(entries, report.items, strict=True)
    }
    for entry in entries:
        stored = stored_record(SlideOutputs(tmp_path / "out", entry.slide_id).prediction)
        assert stored[FINGERPRINT_KEY] == made[entry.slide_id]
    csv = tmp_path / "out" / "predictions.csv"
    cohort.write_predictions(config, entries)  # every fingerprint recomputed
    recomputed = csv.read_text()
    assert len(recomputed.splitlines()) == 3  # header + both slides

    class RecomputedError(Exception):
        pass

    def refuse(*args: object, **kwargs: object) -> None:
        raise RecomputedError

    with monkeypatch.context() as patch:
        patch.setattr(cohort, "StageFingerprints", refuse)
        cohort.write_predictions(config, entries, made)
        assert csv.read_text() == recomputed
        cohort.write_predictions(config, entries, {**made, entries[1].slide_id: "0" * 32})
        assert [line.split(",")[0] for line in csv.read_text().splitlines()[1:]] == [entries[0].slide_id]
        with pytest.raises(RecomputedError):  # a slide this run did not finish is checked as before
            cohort.write_predictions(config, entries, {entries[0].slide_id: made[entries[0].slide_id]})


def test_a_local_cluster_beside_another_on_the_default_dashboard_port_says_nothing(tmp_path: Path) -> None:
    """With port 8787 taken (another run's cluster, a notebook's Dask dashboard), every local
    cluster's start printed "UserWarning: Port 8787 is already in use. Hosting the HTTP server on
    port N instead" into the run's output. The cluster's HTTP routes take a free loopback port."""
    import socket
    import subprocess
    import sys

    code = (
        "from attnmap.parallel_dask import local_cluster\n"
        "cluster = local_cluster(1)\n"
        "print(cluster.scheduler.http_server.port if cluster.scheduler.http_server else '')\n"
        "cluster.close()\n"
    )
    holder = socket.socket()
    try:
        with contextlib.suppress(OSError):  # taken already: by someone else, as in the case reported
            holder.bind(("127.0.0.1", 8787))
            holder.listen()
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    finally:
        holder.close()
    assert done.returncode == 0, done.stderr
    assert "already in use" not in done.stderr, done.stderr


def test_the_progress_bar_counts_in_the_singular_of_its_name(tmp_path: Path, capsys) -> None:
    """The unit was the name with its last "s" cut: "image batches" read "image batche/s"."""
    from attnmap.parallel import item_unit

    items = [(1, str(tmp_path)), (2, str(tmp_path))]
    assert not run_tasks(square_or_fail, items, workers=1, desc="image batches", progress=True).failed
    err = capsys.readouterr().err
    assert "image batches" in err and "batche/" not in err, err
    assert [item_unit(name) for name in ("image batches", "slides", "bags", "boxes", "items")] == [
        "image batch", "slide", "bag", "box", "item"]
