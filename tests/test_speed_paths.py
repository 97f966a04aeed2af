"""Speed paths that must not change results: prefetching, shared patches, in-process runs, thread counts."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_slide_files import write_test_slide, write_tiny_encoder

from attnmap.parallel import report_stage, run_tasks
from attnmap.threads import available_cores, compute_threads, idle_cores, threads_per_task
from attnmap.wsi.encoders import load_encoder
from attnmap.wsi.features import extract_features, save_features
from attnmap.wsi.prefetch import prefetch
from attnmap.wsi.shared_features import extract_features_reusing, matching_rows, stored_features


def test_prefetch_keeps_order_raises_where_it_failed_and_stops_early() -> None:
    assert list(prefetch(range(50), depth=3)) == list(range(50))
    produced: list[int] = []

    def failing():
        for number in range(5):
            produced.append(number)
            if number == 3:
                raise KeyError("bad patch")
            yield number

    seen = []
    with pytest.raises(KeyError, match="bad patch"):
        for number in prefetch(failing()):
            seen.append(number)
    assert seen == [0, 1, 2]
    produced.clear()

    def endless():
        number = 0
        while True:
            produced.append(number)
            yield number
            number += 1

    for number in prefetch(endless(), depth=2):
        if number == 4:
            break
    assert len(produced) <= 4 + 1 + 2 + 1  # the thread stopped a few items ahead, not never
    with pytest.raises(ValueError, match="depth"):
        next(prefetch([1], depth=0))


def test_thread_counts_follow_the_affinity_mask() -> None:
    cores = available_cores()
    if hasattr(os, "sched_getaffinity"):
        assert cores == len(os.sched_getaffinity(0))
    assert threads_per_task(1, cores=8) == 8 and threads_per_task(3, cores=8) == 2
    assert threads_per_task(16, cores=2) == 1
    before = torch.get_num_threads()
    with compute_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_idle_cores_leave_busy_cores_to_other_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    import attnmap.threads as threads

    cores = sorted(os.sched_getaffinity(0))
    samples = iter([{core: (0, 0) for core in cores}, {core: (100, 100) for core in cores}])
    monkeypatch.setattr(threads, "_core_times", lambda: next(samples))  # every core busy throughout
    assert idle_cores(0.0) == 1
    samples = iter([{core: (0, 0) for core in cores}, {core: (0, 100) for core in cores}])
    assert idle_cores(0.0) == available_cores()  # all idle: whatever the load average still says
    if len(cores) > 1:  # one core busy, the others idle
        ends = {core: (100 if core == cores[0] else 0, 100) for core in cores}
        samples = iter([{core: (0, 0) for core in cores}, ends])
        assert idle_cores(0.0) == available_cores() - 1
    monkeypatch.setattr(threads, "_core_times", lambda: None)  # no /proc/stat
    assert idle_cores(0.0) == available_cores()


def test_idle_cores_reads_this_machine() -> None:
    assert 1 <= idle_cores() <= available_cores()


def test_matching_rows_finds_exact_coordinates_only() -> None:
    known = np.array([[0, 0], [256, 0], [0, 256]])
    coords = np.array([[0, 128], [256, 0], [0, 0], [1, 0]])
    assert matching_rows(coords, known).tolist() == [-1, 1, 0, -1]
    assert matching_rows(np.zeros((0, 2)), known).tolist() == []


def test_overlap_grid_reuses_block_grid_features(tmp_path: Path, single_thread: None) -> None:
    slide = write_test_slide(tmp_path / "slide.tif", seed=3)
    encoder = load_encoder(write_tiny_encoder(tmp_path / "tiny.pt"), input_size=32)
    block = np.stack(np.meshgrid(np.arange(0, 768, 256), np.arange(0, 512, 256), indexing="ij"), -1)
    block = block.reshape(-1, 2)
    dense = np.stack(np.meshgrid(np.arange(0, 768, 128), np.arange(0, 512, 128), indexing="ij"), -1)
    dense = dense.reshape(-1, 2)
    options = {"patch_size": 256, "level": 0, "batch_size": 4, "progress": False}
    block_features = extract_features(slide, block, encoder, **options)
    save_features(tmp_path / "f.h5", block_features, block, {"model": "tiny"})
    assert stored_features(tmp_path / "f.h5", "another encoder") is None
    known = stored_features(tmp_path / "f.h5", "tiny")
    assert known is not None
    reused, encoded = extract_features_reusing(slide, dense, encoder, known, **options)
    assert encoded == len(dense) - len(block)  # every block patch is a dense-grid patch
    fresh = extract_features(slide, dense, encoder, **options)
    np.testing.assert_allclose(reused, fresh, rtol=0, atol=1e-6)
    rows = matching_rows(block, dense)
    np.testing.assert_array_equal(reused[rows], block_features)
    _, encoded = extract_features_reusing(slide, dense, encoder, None, **options)
    assert encoded == len(dense)


def _where_and_threads(item: int) -> dict:
    report_stage("first")
    return {"pid": os.getpid(), "threads": torch.get_num_threads(), "item": item}


def test_one_worker_runs_in_this_process_with_every_core() -> None:
    before = torch.get_num_threads()
    report = run_tasks(_where_and_threads, [1, 2], workers=1, progress=False, stages=["first"])
    assert [entry.result["pid"] for entry in report.done] == [os.getpid()] * 2  # no Dask cluster
    assert {entry.result["threads"] for entry in report.done} == {available_cores()}
    assert report.stage_counts == {"first": 2}
    assert torch.get_num_threads() == before  # restored after the run
    pinned = run_tasks(_where_and_threads, [1], workers=1, progress=False, threads=1)
    assert pinned.done[0].result["threads"] == 1


def test_run_report_rewrites_are_spaced_and_the_last_one_holds_every_item(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # rewriting the whole report after every item costs time quadratic in the items
    import json

    from attnmap import parallel

    writes: list[int] = []
    save = parallel.RunReport.save

    def counted(self: parallel.RunReport, path: str | Path) -> Path:
        writes.append(sum(entry.status == "done" for entry in self.items))
        return save(self, path)

    monkeypatch.setattr(parallel.RunReport, "save", counted)
    path = tmp_path / "run_report.json"
    run_tasks(_where_and_threads, range(50), workers=1, progress=False, report=path)
    assert len(writes) < 10  # 50 items in well under REPORT_INTERVAL_S × 8
    assert writes[-1] == 50
    assert json.loads(path.read_text())["summary"]["done"] == 50
    monkeypatch.setattr(parallel, "REPORT_INTERVAL_S", 0.0)
    writes.clear()
    run_tasks(_where_and_threads, range(5), workers=1, progress=False, report=path)
    assert writes == [0, 1, 2, 3, 4, 5, 5]  # the start, each item, the end
