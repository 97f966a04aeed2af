"""Robustness sweep of the zoomable viewer: `attnmap view` and its 127.0.0.1 server hit with requests
and output folders nobody tried (traversal, odd addresses, odd slides, damaged or changing outputs).

Run (about a minute on 2 shared cores; everything in a temporary folder)::

    PYTHONPATH=src nice python bench/view_sweep.py [--only SUBSTRING] [--keep DIR] [-v]

Builds tiny `wsi run` output folders the way ``tests/view_fixtures.py`` does (1024×768 synthetic
TIFF slides, a blockmap with two score sets, fine maps, prediction, tissue), slides of odd sizes, and
one real `wsi run` cohort of two slides; serves each with the viewer's own server (`make_server`,
port 0, in this process, reloading as `attnmap view` does) and fires raw HTTP requests at it, each
with a timeout. The command line itself runs in subprocesses for its options.

Each case is classified:

- ``ok``: the answer is right (a tile decodes at the size its Deep Zoom address has, a descriptor
  names the slide's size, a payload equals what a viewer opened afresh on the same folder serves).
- ``error``: a clean refusal: a 4xx (or a 503 naming files that do not read) with a one-line body,
  after which the server still answers; for the command line, exit 2 with one ``attnmap: error:``
  line.
- ``crash``: any other 5xx, a traceback in the server's log, no answer within the timeout, a server
  that stops answering, or a command line that fails with a traceback.
- ``stale``: after the outputs changed on disk (and the viewer's check interval passed), the open
  server answers otherwise than a viewer opened afresh on the changed folder.
- ``wrong``: a tile of the wrong size or format, a descriptor of another size, a layer listed or
  served that the slide does not have, a slide listed that the last run's cohort no longer has.
- ``escaped``: an answer carrying a file from outside the served content (a canary file beside the
  run folder, ``/etc/passwd``, the package's Python source), or data served to a page of another
  origin (a foreign ``Host``: DNS rebinding).

Prints one line per case (``CLASS  seconds  case  detail``) and the counts per class at the end.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from view_sweep_changes import change_cases
from view_sweep_cli import cli_cases
from view_sweep_damage import damage_cases
from view_sweep_harness import CLASSES, LOG, Sweep
from view_sweep_requests import concurrency_cases, odd_slide_cases, request_cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        default="",
        help="run the groups whose name contains this: requests, concurrency, odd, damage, changes, cli",
    )
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder (kept)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the server log of each case")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    root = args.keep or Path(tempfile.mkdtemp(prefix="attnmap-view-sweep-"))
    root.mkdir(parents=True, exist_ok=True)
    sweep = Sweep(root, args.verbose)
    real_stderr = sys.stderr
    sys.stderr = LOG  # the servers' log lines, and any traceback a thread prints
    try:
        for name, group in (
            ("requests", request_cases),
            ("concurrency", concurrency_cases),
            ("odd", odd_slide_cases),
            ("damage", damage_cases),
            ("changes", change_cases),
            ("cli", cli_cases),
        ):
            if args.only in name:
                group(sweep)
    finally:
        sys.stderr = real_stderr
    counts = Counter(cls for cls, _, _ in sweep.results)
    print(
        f"\n{len(sweep.results)} cases in {time.perf_counter() - start:.0f} s: "
        + ", ".join(f"{name} {counts[name]}" for name in CLASSES)
    )
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
