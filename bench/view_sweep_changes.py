"""`bench/view_sweep.py`'s outputs changed while the viewer serves (reruns, removals, a real `wsi run`
cohort rerun without a slide and with another colour map), compared with a viewer opened afresh."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
from view_sweep_harness import (
    WAIT,
    Served,
    Sweep,
    base_run,
    compare_with_fresh,
    probe_urls,
    write_pipeline_setup,
    write_run_folder,
    write_test_slide,
)


def change_cases(s: Sweep) -> None:
    """Outputs changed while the viewer serves, compared with a viewer opened afresh."""
    from attnmap.view.sources import find_slides

    def changed(
        name: str,
        change: Callable[[Path], None],
        extra: Callable[[Served], str | None] | None = None,
        expect: str = "ok",
    ):
        def run() -> tuple[str, str]:
            root = s.root / f"change_{len(s.results)}"
            folder = base_run(root)
            served = Served(folder)
            try:
                for url in probe_urls(served.content):  # the page has seen everything once (cached)
                    served.get(url)
                change(folder)
                time.sleep(WAIT)
                cls, detail = compare_with_fresh(served)
                why = extra(served) if extra and cls == "ok" else None
                return ("wrong", why) if why else (cls, detail)
            finally:
                served.close()

        s.case(f"change while served: {name}", run, expect=expect)

    def rewrite_scores(folder: Path) -> None:
        path = folder / "heatmaps" / "slide_a" / "slide_a_blockmap.h5"
        with h5py.File(path, "r+") as handle:
            handle["attention_scores"][...] = -handle["attention_scores"][...]

    def add_method(folder: Path) -> None:
        path = folder / "heatmaps" / "slide_a" / "slide_a_blockmap.h5"
        with h5py.File(path, "r+") as handle:
            handle.create_dataset(
                "scores_gradient", data=np.linspace(-1, 1, len(handle["coords"])).reshape(-1, 1)
            )

    def drop_method(folder: Path) -> None:
        path = folder / "heatmaps" / "slide_a" / "slide_a_blockmap.h5"
        with h5py.File(path, "r+") as handle:
            del handle["scores_lrp"]

    def rewrite_same_size(folder: Path) -> None:  # same bytes count, same mtime second, other content
        path = folder / "heatmaps" / "slide_a" / "slide_a_blockmap.h5"
        stat = path.stat()
        with h5py.File(path, "r+") as handle:
            handle["attention_scores"][...] = handle["attention_scores"][...][::-1]
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    def fine_rewritten(folder: Path) -> None:  # written beside and renamed over, as a run replaces a file
        path = folder / "heatmaps" / "slide_a" / "slide_a_fine_maps.h5"
        new = path.with_name("rewritten.h5")
        shutil.copy(path, new)
        with h5py.File(new, "r+") as handle:
            for item in handle.values():
                if isinstance(item, h5py.Dataset) and item.dtype.kind == "f" and item.ndim >= 3:
                    item[...] = -item[...]
        os.replace(new, path)

    def slide_reseeded(folder: Path) -> None:
        write_test_slide(folder.parent / "slides" / "slide_a.tif", seed=7)

    def add_slide(folder: Path) -> None:
        write_run_folder(folder.parent, "slide_z", seed=5)

    def tissue_moved(folder: Path) -> None:
        (folder / "tissue" / "slide_a.json").write_text(
            json.dumps({"contours": [{"outer": [[10, 10], [300, 10], [300, 300]], "holes": []}]})
        )

    changed("scores rewritten", rewrite_scores)
    changed("a method added", add_method)
    changed("a method removed", drop_method)
    changed("scores rewritten, size and mtime kept", rewrite_same_size)
    changed("fine maps rewritten", fine_rewritten)
    changed("fine maps removed", lambda f: (f / "heatmaps/slide_a/slide_a_fine_maps.h5").unlink())
    changed("blockmap removed", lambda f: (f / "heatmaps/slide_a/slide_a_blockmap.h5").unlink())
    changed("slide folder removed", lambda f: shutil.rmtree(f / "heatmaps/slide_a"))
    changed("slide file reseeded (same size)", slide_reseeded)
    changed("slide file deleted", lambda f: (f.parent / "slides/slide_a.tif").unlink())
    changed("a slide added", add_slide)
    changed("tissue rewritten", tissue_moved)
    changed("every slide removed", lambda f: shutil.rmtree(f / "heatmaps"), expect="error")

    # annotations given as a folder, changed while served
    def annotated() -> tuple[str, str]:
        root = s.root / "annotated"
        folder = base_run(root)
        notes = root / "annotations"
        notes.mkdir()
        ring = [[100, 100], [400, 100], [400, 400], [100, 400], [100, 100]]
        feature = {
            "type": "Feature",
            "properties": {},
            "geometry": {"type": "Polygon", "coordinates": [ring]},
        }
        (notes / "slide_a.geojson").write_text(
            json.dumps({"type": "FeatureCollection", "features": [feature]})
        )
        served = Served(folder, notes)
        try:
            for url in probe_urls(served.content):
                served.get(url)
            feature["geometry"]["coordinates"] = [[[500, 300], [900, 300], [900, 700], [500, 300]]]
            (notes / "slide_a.geojson").write_text(
                json.dumps({"type": "FeatureCollection", "features": [feature]})
            )
            (notes / "slide_b.geojson").write_text("{not json")
            time.sleep(WAIT)
            return compare_with_fresh(served)
        finally:
            served.close()

    s.case("change while served: annotations rewritten, one broken", annotated, expect="ok")

    # one slide with --scores files, changed while served
    for name, change in (
        ("scores rewritten", rewrite_scores),
        ("scores file deleted", lambda f: (f / "heatmaps/slide_a/slide_a_blockmap.h5").unlink()),
        ("slide file reseeded", slide_reseeded),
    ):

        def single(change=change) -> tuple[str, str]:
            root = s.root / f"single_{len(s.results)}"
            folder = base_run(root)
            blockmap = folder / "heatmaps" / "slide_a" / "slide_a_blockmap.h5"
            served = Served(folder.parent / "slides" / "slide_a.tif", scores=[blockmap])
            try:
                for url in probe_urls(served.content):
                    served.get(url)
                change(folder)
                time.sleep(WAIT)
                return compare_with_fresh(served)
            finally:
                served.close()

        s.case(f"change while served, slide with --scores: {name}", single)

    # a folder of run folders, the same slide ids in both (shown as <run>-<id>)
    for name, change in (
        ("one run's slide removed", lambda r: shutil.rmtree(r / "all" / "one" / "heatmaps" / "slide_a")),
        ("one run removed", lambda r: shutil.rmtree(r / "all" / "two")),
        ("scores of a clashing id rewritten", lambda r: rewrite_scores(r / "all" / "two")),
    ):

        def runs(change=change) -> tuple[str, str]:
            root = s.root / f"runs_{len(s.results)}"
            for part in ("one", "two"):
                base_run(root / part)
                (root / part / "run").rename(root / part / part)
                (root / "all").mkdir(exist_ok=True)
                (root / part / part).rename(root / "all" / part)  # its slides found by their absolute paths
            served = Served(root / "all")
            try:
                for url in probe_urls(served.content):
                    served.get(url)
                change(root)
                time.sleep(WAIT)
                return compare_with_fresh(served)
            finally:
                served.close()

        s.case(f"change while served, folder of runs: {name}", runs)

    # a real `wsi run` cohort: a rerun that drops a slide from the CSV, and one with another colour map
    from attnmap.cli.main import main

    project = s.root / "project"
    config = write_pipeline_setup(project, n_slides=2)

    def wsi_run() -> None:
        here = Path.cwd()
        os.chdir(project)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                main(["--quiet", "wsi", "run", config.name])
        finally:
            os.chdir(here)

    wsi_run()
    out = project / "out"

    def cohort_drop() -> tuple[str, str]:
        served = Served(out)
        try:
            csv = project / "slides.csv"
            csv.write_text("".join(csv.read_text().splitlines(keepends=True)[:2]))  # header + slide_0
            wsi_run()
            time.sleep(WAIT)
            body = served.get("/data/slides.js").body.decode()
            listed = re.findall(r'"id":"([^"]+)"', body.split('"unshown"')[0])
            if "slide_1" in listed:
                return "wrong", f"lists {listed} after a rerun whose cohort is only slide_0"
            return "ok", f"lists {listed}"
        finally:
            served.close()

    s.case("rerun dropping a slide from the cohort CSV", cohort_drop, expect="ok")

    def cohort_drop_fresh() -> tuple[str, str]:
        found = find_slides(out)
        listed = [slide.slide_id for slide in found.slides]
        if "slide_1" in listed:
            return "wrong", f"a fresh `attnmap view` lists {listed}; the cohort is only slide_0"
        return "ok", f"lists {listed}, names {[u.slide_id for u in found.unshown]}"

    s.case("view started after the cohort dropped a slide", cohort_drop_fresh, expect="ok")

    def attention_cmap(served: Served) -> str:
        text = served.get("/data/0/info.js").body.decode()
        info = json.loads(text.split(", ", 1)[1].rsplit(")", 1)[0])
        return next(m["scale"]["cmap"] for m in info["methods"] if m["name"] == "attention")

    def cmap_rerun() -> tuple[str, str]:
        served = Served(out)
        try:
            before = attention_cmap(served)
            text = config.read_text().replace("alpha: 0.5", "alpha: 0.5\n  cmap: viridis")
            config.write_text(text)
            wsi_run()
            time.sleep(WAIT)
            after = attention_cmap(served)
            if after != "viridis":
                return (
                    "stale",
                    f"colour bar {after} (before: {before}) after a rerun with heatmap.cmap viridis",
                )
            return "ok", f"colour bar {before} -> {after}"
        finally:
            served.close()

    s.case("rerun with another colour map", cmap_rerun, expect="ok")
