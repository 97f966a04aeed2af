"""`bench/view_sweep.py`'s damaged outputs: each damage made before the viewer starts and while it
serves, then the server compared with a viewer opened afresh."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
from view_sweep_harness import (
    LOG,
    WAIT,
    Served,
    Sweep,
    base_run,
    compare_with_fresh,
    rename_slide,
    truncate,
    write_test_slide,
)


def _damage_cases(run: Path) -> list[tuple[str, Callable[[], None]]]:
    folder = run / "heatmaps" / "slide_a"
    blockmap, fine = folder / "slide_a_blockmap.h5", folder / "slide_a_fine_maps.h5"
    prediction, tissue = folder / "slide_a_prediction.json", run / "tissue" / "slide_a.json"
    slide = run.parent / "slides" / "slide_a.tif"

    def h5_with(path: Path, **datasets) -> Callable[[], None]:
        def make() -> None:
            with h5py.File(path, "w") as handle:
                for key, value in datasets.items():
                    if key.startswith("attr_"):
                        handle.attrs[key[5:]] = value
                    else:
                        handle.create_dataset(key, data=value)

        return make

    def patch_attr(value) -> Callable[[], None]:
        def make() -> None:
            with h5py.File(blockmap, "r+") as handle:
                handle.attrs["patch_size"] = value

        return make

    def scores(value) -> Callable[[], None]:
        def make() -> None:
            with h5py.File(blockmap, "r+") as handle:
                data = handle["attention_scores"][...]
                data[0] = value
                handle["attention_scores"][...] = data

        return make

    coords = np.array([[0, 0], [128, 0]], dtype=np.int64)
    return [
        ("blockmap missing", blockmap.unlink),
        ("prediction missing", prediction.unlink),
        ("fine maps missing", fine.unlink),
        ("tissue json missing", tissue.unlink),
        ("whole slide folder missing", lambda: shutil.rmtree(folder)),
        ("blockmap truncated", lambda: truncate(blockmap)),
        ("blockmap empty file", lambda: blockmap.write_bytes(b"")),
        ("blockmap is a folder", lambda: (blockmap.unlink(), blockmap.mkdir())),
        (
            "blockmap without coords",
            h5_with(blockmap, attention_scores=np.zeros((2, 1)), attr_patch_size=128),
        ),
        (
            "blockmap coords 1-D",
            h5_with(blockmap, coords=np.arange(2), attention_scores=np.zeros((2, 1)), attr_patch_size=128),
        ),
        (
            "blockmap coords (N, 3)",
            h5_with(
                blockmap,
                coords=np.zeros((2, 3), np.int64),
                attention_scores=np.zeros((2, 1)),
                attr_patch_size=128,
            ),
        ),
        (
            "blockmap 0 patches",
            h5_with(
                blockmap,
                coords=np.zeros((0, 2), np.int64),
                attention_scores=np.zeros((0, 1)),
                attr_patch_size=128,
            ),
        ),
        (
            "blockmap 1 patch, no patch size",
            h5_with(blockmap, coords=coords[:1], attention_scores=np.zeros((1, 1))),
        ),
        (
            "blockmap scores of another length",
            h5_with(blockmap, coords=coords, attention_scores=np.zeros((5, 1)), attr_patch_size=128),
        ),
        ("blockmap NaN score", scores(np.nan)),
        ("blockmap inf score", scores(np.inf)),
        ("blockmap patch_size 0", patch_attr(0)),
        ("blockmap patch_size -128", patch_attr(-128)),
        ("blockmap patch_size 'abc'", patch_attr("abc")),
        ("blockmap patch_size 1e12", patch_attr(10**12)),
        (
            "blockmap string scores",
            h5_with(blockmap, coords=coords, attention_scores=np.array([b"a", b"b"]), attr_patch_size=128),
        ),
        ("prediction truncated", lambda: truncate(prediction)),
        ("prediction a list", lambda: prediction.write_text("[1, 2]")),
        ("prediction slide_path a number", lambda: prediction.write_text('{"slide_path": 3}')),
        ("prediction slide_path empty", lambda: prediction.write_text('{"slide_path": ""}')),
        (
            "prediction probabilities odd",
            lambda: prediction.write_text(
                json.dumps(
                    {"slide_path": str(slide), "prediction": 5, "probabilities": "high", "label": {"a": 1}}
                )
            ),
        ),
        ("prediction not UTF-8", lambda: prediction.write_bytes(b"\xff\xfe{")),
        ("tissue json truncated", lambda: truncate(tissue)),
        (
            "tissue contours malformed",
            lambda: tissue.write_text(
                json.dumps({"contours": [{"outer": [[1]], "holes": "x"}, {"outer": "abc", "holes": []}]})
            ),
        ),
        (
            "tissue contours of one point",
            lambda: tissue.write_text(json.dumps({"contours": [{"outer": [[5, 5]], "holes": []}]})),
        ),
        (
            "tissue level_dimensions wrong",
            lambda: tissue.write_text(json.dumps({"contours": [], "level_dimensions": [[10, 10]]})),
        ),
        ("fine maps truncated", lambda: truncate(fine)),
        ("fine maps empty file", lambda: fine.write_bytes(b"")),
        ("fine maps without datasets", h5_with(fine, attr_method="lrp")),
        ("fine maps a blockmap", lambda: shutil.copy(blockmap, fine)),
        (
            "overlap blockmap truncated",
            lambda: (
                shutil.copy(blockmap, folder / "slide_a_overlap_blockmap.h5"),
                truncate(folder / "slide_a_overlap_blockmap.h5"),
            ),
        ),
        (
            "overlap blockmap without attention",
            h5_with(
                folder / "slide_a_overlap_blockmap.h5",
                coords=coords,
                scores_lrp=np.zeros((2, 1)),
                attr_patch_size=128,
            ),
        ),
        ("run_report truncated", lambda: (run / "run_report.json").write_text('{"items": [{"status": "fa')),
        (
            "run_report items odd",
            lambda: (run / "run_report.json").write_text(
                '{"items": [{"status": "failed", "item": 3}, 5, null]}'
            ),
        ),
        ("slide file truncated", lambda: truncate(slide, 0.3)),
        ("slide file empty", lambda: slide.write_bytes(b"")),
        ("slide file deleted", slide.unlink),
        ("slide file moved", lambda: slide.rename(slide.with_name("moved.tif"))),
        ("slide replaced by a smaller one", lambda: write_test_slide(slide, seed=9, size=(512, 384))),
        ("slide is a folder", lambda: (slide.unlink(), slide.mkdir())),
        ("slide id with spaces and %", lambda: rename_slide(run, "slide_a", "a b%20c#?")),
        ("stray file in heatmaps/", lambda: (run / "heatmaps" / "notes.txt").write_text("x")),
        ("heatmaps/ a file", lambda: (shutil.rmtree(run / "heatmaps"), (run / "heatmaps").write_text("x"))),
    ]


MUST_HIDE = {
    "blockmap coords (N, 3)",
    "blockmap patch_size 0",
    "blockmap patch_size -128",
    "blockmap patch_size 'abc'",
    "blockmap NaN score",
    "blockmap scores of another length",
    "slide replaced by a smaller one",
}
"""Damages after which slide_a must not be shown (named among the slides not shown, with why)."""
MUST_SHOW = {
    "fine maps missing",
    "fine maps truncated",
    "fine maps empty file",
    "fine maps without datasets",
    "fine maps a blockmap",
    "overlap blockmap truncated",
    "overlap blockmap without attention",
    "tissue json missing",
    "tissue json truncated",
    "tissue contours malformed",
    "tissue contours of one point",
    "prediction probabilities odd",
    "run_report truncated",
    "run_report items odd",
    "stray file in heatmaps/",
}
"""Damages that leave slide_a showable (its blockmap reads; a damaged fine-map or overlap file is left
out and named): hiding it would hide a good slide."""


def shown_check(folder: Path, name: str) -> str | None:
    """Why the slides a fresh viewer shows contradict `MUST_HIDE` / `MUST_SHOW`, or None."""
    from attnmap.errors import InputError
    from attnmap.view import find_slides

    try:
        ids = [slide.slide_id for slide in find_slides(folder).slides]
    except InputError:
        ids = []
    if name in MUST_HIDE and "slide_a" in ids:
        return f"slide_a is shown after '{name}'"
    if name in MUST_SHOW and "slide_a" not in ids:
        return f"slide_a is not shown after '{name}'"
    return None


def damage_cases(s: Sweep) -> None:
    """Each damage before the viewer starts (as `attnmap view` finds the folder) and while it serves."""
    from attnmap.errors import InputError

    names = [name for name, _ in _damage_cases(s.root / "x")]
    for number in range(len(names)):
        for when in ("before start", "while served"):
            root = s.root / f"damage_{number}_{when[0]}"

            def run(root=root, number=number, when=when) -> tuple[str, str]:
                folder = base_run(root)
                damage = _damage_cases(folder)[number][1]
                if when == "before start":
                    with contextlib.redirect_stderr(LOG):  # warnings of a discovery go to the log
                        damage()
                        try:
                            served = Served(folder)
                        except InputError as exc:
                            return "error", "start: " + " ".join(str(exc).split())[:150]
                else:
                    served = Served(folder)
                    assert served.get("/data/slides.js").status == 200
                    damage()
                    time.sleep(WAIT)
                try:
                    cls, detail = compare_with_fresh(served)
                    why = shown_check(folder, names[number]) if cls == "ok" else None
                    return ("wrong", why) if why else (cls, detail)
                finally:
                    served.close()

            s.case(f"damage {when}: {names[number]}", run)
