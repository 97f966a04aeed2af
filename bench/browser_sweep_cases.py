"""The cases of `browser_sweep.py`: run folders nobody tried, opened and used in a real browser."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
from browser_sweep_harness import (
    Page,
    Served,
    Sweep,
    check_heat,
    check_safe,
    check_scalebar,
    check_slide,
    fail,
    page_problems,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' slide and run-folder writers
from synthetic_slide_files import write_test_slide  # noqa: E402
from view_fixtures import PATCH, write_run_folder  # noqa: E402

ODD_IDS = (
    "with space",
    "ünïcødé-病理",
    "a#b",
    "100%",
    "what?",
    "a&b=c",
    "plus+sign",
    'it\'s "quoted"',
    "<img src=x onerror=window.__xss=1>",
    "<b>x<b>",
    "L" * 180,
)


def _rewrite_scores(run: Path, slide_id: str, hot: tuple[int, int]) -> None:
    """A rerun of one slide whose attention now peaks at ``hot``."""
    path = run / "heatmaps" / slide_id / f"{slide_id}_blockmap.h5"
    with h5py.File(path, "r+") as handle:
        coords = handle["coords"][:]
        distance = np.hypot(coords[:, 0] - hot[0], coords[:, 1] - hot[1]) / PATCH
        handle["attention_scores"][:, 0] = (-distance).astype(np.float32)


def _blockmap_run(root: Path, slide_id: str, size, coords, datasets: dict, patch: int, mpp=0.5) -> Path:
    slide = write_test_slide(root / "slides" / f"{slide_id}.tif", seed=3, size=size, mpp=mpp, n_levels=1)
    folder = root / "run" / "heatmaps" / slide_id
    folder.mkdir(parents=True)
    with h5py.File(folder / f"{slide_id}_blockmap.h5", "w") as handle:
        handle.create_dataset("coords", data=np.asarray(coords, dtype=np.int64))
        for name, values in datasets.items():
            handle.create_dataset(name, data=np.asarray(values, dtype=np.float32))
        handle.attrs["patch_size"] = patch
    (folder / f"{slide_id}_prediction.json").write_text(
        json.dumps({"slide_path": str(slide), "prediction": 0})
    )
    return root / "run"


def _grid(size: tuple[int, int], patch: int) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(0, size[0], patch), np.arange(0, size[1], patch))
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def _open_and_check(s: Sweep, run: Path, methods=(0,), slide=True, scale=True, prepare=None, page_size=None):
    """Serve ``run``, open it, check the slide, the methods' heat colours and the scale bar."""
    with Served(run, prepare) as served:
        p = Page(s.browser, served.url, **({"size": page_size} if page_size else {}))
        for m in methods:
            if m:
                p.method(m)
            problem = check_heat(p, m)
            if problem:
                fail("wrong", problem)
        if slide and (problem := check_slide(p)):
            fail("wrong", problem)
        if scale and (problem := check_scalebar(p)):
            fail("wrong", problem)
        result = page_problems(p)
        p.close()
        return result


def _deep_and_edges(p: Page) -> None:
    """Zoom in to the deepest level, pan to each corner, zoom out past the whole slide."""
    p.js("(v => v.zoomTo(v.getMaxZoom(), null, true))(window.attnmap.viewer.viewport)")
    p.settle(300)
    bounds = p.js("(b => [b.x, b.y, b.width, b.height])(window.attnmap.viewer.world.getHomeBounds())")
    x, y, w, h = bounds
    for px, py in ((x, y), (x + w, y), (x + w, y + h), (x, y + h)):
        p.js(f"window.attnmap.viewer.viewport.panTo(new OpenSeadragon.Point({px}, {py}), true)")
        p.settle(250)
    p.js("(v => v.zoomTo(v.getMinZoom(), null, true))(window.attnmap.viewer.viewport)")
    p.settle(250)


# --- names ------------------------------------------------------------------------------------------


def name_cases(s: Sweep) -> None:
    root = s.folder("names")
    for i, slide_id in enumerate(("plain",) + ODD_IDS):
        run = write_run_folder(root, slide_id, seed=i, fine=False)
    (run / "run_report.json").write_text(  # a slide the run failed on, named and explained in markup
        json.dumps(
            {
                "provenance": {"method": "attnmap wsi run"},
                "items": [
                    {"item": f"slides/{i}.tif", "status": "done", "result": {"slide_id": i}}
                    for i in ("plain",) + ODD_IDS
                ]
                + [
                    {
                        "item": "slides/<img src=y onerror=window.__xss=2>.svs",
                        "status": "failed",
                        "error_type": "<b>Boom</b>",
                        "message": "<script>window.__xss=3</script> & <i>why</i>",
                    }
                ],
            }
        )
    )
    with Served(run) as served:
        p = Page(s.browser, served.url)

        def unshown() -> None:
            rows = p.page.locator("#slides li.unshown").all_inner_texts()
            if not rows or "<img src=y" not in rows[0] or "<script>" not in rows[0]:
                fail("wrong", f"failed slide not listed as text: {rows}")
            if problem := check_safe(p):
                fail("wrong", problem)
            return page_problems(p)

        s.case("names: failed slide in run_report, markup in id/reason", unshown)
        ids = p.js(
            "[...document.querySelectorAll('#slides li:not(.unshown)')].map(li => li.firstChild.textContent)"
        )
        for slide_id in ODD_IDS:

            def one(slide_id=slide_id):
                if slide_id not in ids:
                    fail("wrong", f"not in the slide list: {ids}")
                p.page.locator("#slides li:not(.unshown)").nth(ids.index(slide_id)).click()
                p.loaded(extra=f"window.attnmap.state.info.id === {json.dumps(slide_id)}")
                title = p.text("#title")
                if not title.startswith(slide_id):
                    fail("wrong", f"title {title[:80]!r}")
                if problem := check_safe(p) or check_heat(p, 0):
                    fail("wrong", problem)
                p.page.reload()  # the address names the slide: it opens there again
                p.loaded()
                if (shown := p.js("window.attnmap.state.info.id")) != slide_id:
                    fail("wrong", f"reload opened {shown!r}")
                return page_problems(p)

            s.case(f"names: {slide_id[:40]}", one)

        def layout():
            p.page.locator("#slides li:not(.unshown)").nth(ids.index(ODD_IDS[-1])).click()
            p.loaded(extra="window.attnmap.state.info.id.length > 100")
            wide = p.js(
                "['side', 'title', 'slides'].filter(id => { const e = document.getElementById(id); "
                "return e.scrollWidth > e.clientWidth + 1; })"
            )
            if wide:
                fail("wrong", f"a long slide id overflows {wide} (text cut off or a sideways scroll)")
            return page_problems(p)

        s.case("names: 180-character id fits the panel and title", layout)
        p.close()


# --- counts and geometry ----------------------------------------------------------------------------


def count_cases(s: Sweep) -> None:
    def one_slide():
        run = write_run_folder(s.folder("one"), "only", fine=False)
        with Served(run) as served:
            p = Page(s.browser, served.url)
            if p.page.locator("#slides-section").is_visible():
                fail("wrong", "a one-slide list is shown")
            if not p.text("#title").startswith("only"):
                fail("wrong", f"title {p.text('#title')!r}")
            for m in (0, 1):
                if m:
                    p.method(m)
                if problem := check_heat(p, m):
                    fail("wrong", problem)
            if problem := check_slide(p) or check_scalebar(p):
                fail("wrong", problem)
            return page_problems(p)

    s.case("count: 1 slide", one_slide)

    def forty():
        root = s.folder("forty")
        for i in range(40):
            run = write_run_folder(root, f"s{i:02d}", seed=i, fine=False)
        with Served(run) as served:
            p = Page(s.browser, served.url)
            rows = p.page.locator("#slides li")
            if rows.count() != 40:
                fail("wrong", f"{rows.count()} rows for 40 slides")
            rows.nth(39).click()
            p.loaded(extra="window.attnmap.state.slide === 39")
            if not p.js(
                "(e => { const r = e.getBoundingClientRect(), l = document.getElementById('slides')"
                ".getBoundingClientRect(); return r.top >= l.top - 1 && r.bottom <= l.bottom + 1; })"
                "(document.querySelector('#slides li.active'))"
            ):
                fail("wrong", "the active slide is scrolled out of the list")
            if problem := check_heat(p, 0):
                fail("wrong", problem)
            return page_problems(p)

    s.case("count: 40 slides, the last one", forty)


def geometry_cases(s: Sweep) -> None:
    for size, mpp in (
        ((1, 300), 0.5),
        ((300, 1), 0.5),
        ((100, 80), 0.5),
        ((4000, 120), 0.25),
        ((120, 4000), 0.25),
        ((1024, 768), None),
        ((5, 5), None),
    ):

        def one(size=size, mpp=mpp):
            patch = max(1, min(64, *size))
            coords = _grid(size, patch)
            scores = np.linspace(0, 1, len(coords))
            run = _blockmap_run(
                s.folder("geom"),
                f"g{size[0]}x{size[1]}",
                size,
                coords,
                {"attention_scores": scores.reshape(-1, 1)},
                patch,
                mpp,
            )
            with Served(run) as served:
                p = Page(s.browser, served.url)
                if problem := check_heat(p, 0) or check_slide(p) or check_scalebar(p):
                    fail("wrong", problem)
                _deep_and_edges(p)
                if problem := check_scalebar(p):
                    fail("wrong", f"zoomed: {problem}")
                return page_problems(p)

        s.case(f"geometry: {size[0]}×{size[1]}, mpp {mpp}", one)


# --- maps -------------------------------------------------------------------------------------------


def map_cases(s: Sweep) -> None:
    size = (1024, 768)
    coords = _grid(size, PATCH)
    n = len(coords)

    def constant():
        run = _blockmap_run(
            s.folder("constant"), "constant", size, coords, {"attention_scores": np.full((n, 1), 0.5)}, PATCH
        )
        result = _open_and_check(s, run)
        return result

    s.case("maps: constant scores", constant)

    def one_patch():
        run = _blockmap_run(
            s.folder("one_patch"), "one_patch", size, [[512, 256]], {"attention_scores": [[2.0]]}, PATCH
        )
        return _open_and_check(s, run)

    s.case("maps: one patch", one_patch)

    def many_methods():
        rng = np.random.default_rng(0)
        data = {"attention_scores": rng.normal(size=(n, 1))}
        data |= {f"scores_class_{k}": rng.normal(size=(n, 1)) for k in range(12)}
        run = _blockmap_run(s.folder("many"), "many", size, coords, data, PATCH)
        return _open_and_check(s, run, methods=range(13), slide=False, scale=False)

    s.case("maps: 13 methods (classes), each", many_methods)

    def branches():
        rng = np.random.default_rng(1)
        root = s.folder("branches")
        _blockmap_run(root, "branches", size, coords, {"attention_scores": rng.normal(size=(n, 3))}, PATCH)
        run = write_run_folder(root, "plain", fine=False)
        with Served(run) as served:
            p = Page(s.browser, served.url)
            rows = p.page.locator("#slides li.unshown").all_inner_texts()
            if not rows or "branches" not in rows[0]:
                fail("wrong", f"a blockmap of 3 branches is not named as unshown: {rows}")
            return page_problems(p) or ("error", rows[0].replace("\n", " ")[:120])

    s.case("maps: attention of 3 branches (N, 3)", branches)

    def fine():
        run = write_run_folder(s.folder("fine"), "fine", fine=True)
        with Served(run) as served:
            p = Page(s.browser, served.url)
            p.method(2)
            if not p.page.locator("#fine-legend").is_visible():
                fail("wrong", "no second colour bar for the fine maps")
            p.js(f"window.attnmap.jumpTo(512, 256, {PATCH})")
            p.settle(700)
            p.opacity(100)
            from attnmap.render.scale import colour_table

            table = colour_table("RdBu_r").astype(int)
            shot = p.shot()
            for x, want in ((512 + PATCH * 0.25, table[-1]), (512 + PATCH * 0.75, table[0])):
                point = p.at(x, 256 + PATCH / 2)
                pixel = shot[int(point["y"]), int(point["x"])]
                if np.abs(pixel - want).max() > 14:
                    fail("wrong", f"fine map at x={x}: {pixel.tolist()} ≠ {want.tolist()}")
            p.method(0)
            if p.page.locator("#fine-legend").is_visible():
                fail("wrong", "the fine colour bar stays for the attention")
            return page_problems(p)

    s.case("maps: fine maps inside the top patch", fine)
