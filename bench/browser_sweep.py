"""Robustness census of the zoomable viewer (`attnmap view`) as a real browser shows it: Debian's
headless Chromium driven by Playwright (never a downloaded browser) on run folders nobody tried.

Run (a few minutes on 2 shared cores; everything in a temporary folder)::

    PYTHONPATH=src nice python bench/browser_sweep.py [--only SUBSTRING] [--keep DIR]

`view_sweep.py` sends the server raw HTTP requests; this sweep covers what only the page's
JavaScript sees. It builds run folders as ``tests/view_fixtures.py`` does (and one real `wsi run`),
serves each with the viewer's own server (port 0, in process, re-reading on change as `attnmap
view` does), opens the page and uses it: slide ids with spaces, unicode, ``# % ? & + '"``, markup
and 180 characters; 1 and 40 slides; slides smaller than a tile, 1×300, 300×1, 5×5, 4000×120,
120×4000, with and without a pixel size; constant maps, one patch, 13 methods, a 3-branch attention,
fine maps; quick slide and method clicks, opacity, tissue, the deepest zoom and the four edges,
the cursor readout, the gallery, a smaller window, reload, a link pasted in the tab, back and
forward; a rerun while open (of the slide in view, of another), unreadable scores, a stopped
server; the static export opened from file://.

Each case is classified:

- ``ok``: what the page shows is right: the slide's pixels where the slide is, each layer's patch
  in the colour its score has on the method's own scale (and the slide through it at opacity 0),
  the scale bar's length over its width equal to the view's µm per screen pixel, the state after
  the interaction as asked, no script error, no failed request for anything the page asked for.
- ``error``: the page cannot show it and says why in one line (its title, or the slide list's
  reason).
- ``crash``: a script exception or console error, a page that never loads and says nothing.
- ``wrong``: a wrong or stale map, a wrong layer or slide, stacked layers, markup from a name
  injected, a misplaced overlay or scale bar, a request for a tile that does not exist.

Prints one line per case (``CLASS  seconds  case  detail``) and the counts per class at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_sweep_cases import count_cases, geometry_cases, map_cases, name_cases  # noqa: E402
from browser_sweep_export import export_cases, export_odd_cases, real_run_cases  # noqa: E402
from browser_sweep_harness import CHROMIUM, CLASSES, Sweep  # noqa: E402
from browser_sweep_use import change_cases, edge_cases, use_cases  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        default="",
        help="run the groups whose name contains this: names, counts, geometry, maps, "
        "use, changes, export, real",
    )
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder (kept)")
    args = parser.parse_args()
    import torch
    from playwright.sync_api import sync_playwright

    torch.set_num_threads(1)
    if CHROMIUM is None:
        sys.exit("browser_sweep: no chromium (apt-get install chromium); set ATTNMAP_CHROMIUM")
    start = time.perf_counter()
    root = args.keep or Path(tempfile.mkdtemp(prefix="attnmap-browser-sweep-"))
    root.mkdir(parents=True, exist_ok=True)
    here = os.getcwd()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        sweep = Sweep(browser, root)
        try:
            for name, group in (
                ("names", name_cases),
                ("counts", count_cases),
                ("geometry", geometry_cases),
                ("maps", map_cases),
                ("use", use_cases),
                ("edges", edge_cases),
                ("changes", change_cases),
                ("export", export_cases),
                ("export odd", export_odd_cases),
                ("real", real_run_cases),
            ):
                if args.only in name:
                    group(sweep)
        finally:
            browser.close()
            os.chdir(here)
    counts = Counter(cls for cls, _, _ in sweep.results)
    print(
        f"\n{len(sweep.results)} cases in {time.perf_counter() - start:.0f} s: "
        + ", ".join(f"{name} {counts[name]}" for name in CLASSES)
    )
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
