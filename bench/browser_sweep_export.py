"""The cases of `browser_sweep.py` that open the static export from disk, and one real `wsi run`."""

from __future__ import annotations

import json

import numpy as np
from browser_sweep_cases import ODD_IDS, _blockmap_run, _deep_and_edges, _grid
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
from view_fixtures import write_overlap_run, write_run_folder


def export_cases(s: Sweep) -> None:
    from attnmap.view import ViewerContent, discover, export_static

    root = s.folder("export")
    for i, slide_id in enumerate(("plain",) + ODD_IDS[:10]):
        run = write_run_folder(root, slide_id, seed=i, fine=(i == 0))
    content = ViewerContent(discover(run))
    index = export_static(content, root / "site")
    content.close()
    p = Page(s.browser, index.as_uri())
    ids = p.js("[...document.querySelectorAll('#slides li')].map(li => li.firstChild.textContent)")
    for n, slide_id in enumerate(("plain",) + ODD_IDS[:10]):

        def one(slide_id=slide_id, n=n):
            p.page.locator("#slides li").nth(ids.index(slide_id)).click()
            p.loaded(extra=f"window.attnmap.state.info.id === {json.dumps(slide_id)}")
            methods = (0, 1, 2) if n == 0 else (0,)
            for m in methods:
                if m:
                    p.method(m)
                if m < 2 and (problem := check_heat(p, m)):
                    fail("wrong", problem)
            if problem := check_safe(p) or (check_slide(p) if n == 0 else None):
                fail("wrong", problem)
            p.page.reload()
            p.loaded()
            if (shown := p.js("window.attnmap.state.info.id")) != slide_id:
                fail("wrong", f"reload from disk opened {shown!r}")
            return page_problems(p)

        s.case(f"export file://: {slide_id[:40]}", one)
    p.close()


def real_run_cases(s: Sweep) -> None:
    def real():
        run = write_overlap_run(s.folder("real"))
        with Served(run) as served:
            p = Page(s.browser, served.url)
            names = p.js("window.attnmap.state.info.methods.map(m => m.name)")
            if names != ["attention", "attention (overlapping grid)"]:
                fail("wrong", f"methods {names}")
            if problem := check_heat(p, 0) or check_slide(p) or check_scalebar(p):
                fail("wrong", problem)
            p.method(1)
            _deep_and_edges(p)
            return page_problems(p)

    s.case("real wsi run (overlap 0.5)", real)


def export_odd_cases(s: Sweep) -> None:
    """Slides smaller than a tile, one pixel thin, without a pixel size, exported and opened from disk
    (the export leaves out empty overlay tiles: the page must never ask for one)."""

    from attnmap.view import ViewerContent, discover, export_static

    root = s.folder("export_odd")
    sizes = ((1, 300), (300, 1), (5, 5), (4000, 120), (100, 80))
    for size in sizes:
        patch = max(1, min(64, *size))
        coords = _grid(size, patch)
        scores = np.linspace(0, 1, len(coords)).reshape(-1, 1)
        run = _blockmap_run(
            root, f"g{size[0]}x{size[1]}", size, coords, {"attention_scores": scores}, patch, None
        )
    content = ViewerContent(discover(run))
    index = export_static(content, root / "site")
    content.close()
    p = Page(s.browser, index.as_uri())
    ids = p.js("[...document.querySelectorAll('#slides li')].map(li => li.firstChild.textContent)")
    for size in sizes:
        slide_id = f"g{size[0]}x{size[1]}"

        def one(slide_id=slide_id):
            p.page.locator("#slides li").nth(ids.index(slide_id)).click()
            p.loaded(extra=f"window.attnmap.state.info.id === {json.dumps(slide_id)}")
            if problem := check_heat(p, 0) or check_slide(p) or check_scalebar(p):
                fail("wrong", problem)
            _deep_and_edges(p)
            return page_problems(p)

        s.case(f"export file://: {slide_id}, no pixel size", one)
    p.close()
