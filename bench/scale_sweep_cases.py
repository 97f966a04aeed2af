"""The Python-API cases of `scale_sweep.py`, one per process: ``python scale_sweep_cases.py CASE ARGS``.

``started`` goes to stderr once attnmap is imported (the census counts silences after it: the
import alone takes seconds on a loaded machine). ``cli ARGS`` runs the command line. Each case
prints one ``RESULT {json}`` line the census checks (counts, sizes); an `InputError` prints
``REFUSED <message>`` and exits 2, as the command line does. Only public API is called, so the
same file runs against the starting code (PYTHONPATH) for the "before" row.
"""

from __future__ import annotations

import json
import sys


def _result(**values: object) -> None:
    print("RESULT " + json.dumps(values), flush=True)


def open_read(path: str) -> None:
    """open_slide, a 512² region at the slide's centre at level 0 and one at its coarsest level."""
    from attnmap.wsi.slide import open_slide

    with open_slide(path) as slide:
        width, height = slide.dimensions
        centre = slide.read_region((width // 2 - 256, height // 2 - 256), 0, (512, 512))
        last = slide.level_count - 1
        corner = slide.read_region((0, 0), last, (512, 512))
        _result(levels=slide.level_count, reader=slide.reader, centre=list(centre.shape),
                coarse=list(corner.shape))


def segment(path: str, a_t: str = "1") -> None:
    """segment_tissue with small-tissue areas (``a_t``, ``a_h`` = 1 unless given): the tissue's
    level-0 area."""
    import cv2

    from attnmap.wsi.slide import open_slide
    from attnmap.wsi.tissue import segment_tissue

    with open_slide(path) as slide:
        tissue = segment_tissue(slide, a_t=float(a_t), a_h=float(a_t))
    area = sum(cv2.contourArea(p.outer.reshape(-1, 1, 2).astype("float32")) for p in tissue.contours)
    _result(regions=len(tissue.contours), area=area, seg_level=tissue.seg_level)


def viewer_tiles(path: str) -> None:
    """Deep Zoom: the overview tiles the viewer asks for first (the coarsest levels up to 1k px)
    and one full-resolution tile at the centre."""
    from attnmap.view.deepzoom import SlideTiles
    from attnmap.wsi.slide import open_slide

    with open_slide(path) as slide:
        tiles = SlideTiles(slide)
        grid = tiles.grid
        count = 0
        for level in range(grid.level_count):
            width, height = grid.level_dimensions[level]
            if max(width, height) > 1024:
                break
            cols, rows = grid.level_tiles[level]
            for col in range(cols):
                for row in range(rows):
                    tiles.tile(level, col, row)
                    count += 1
                    print(f"tile {level}/{col}_{row}", file=sys.stderr, flush=True)
        top = grid.level_count - 1
        width, height = grid.level_dimensions[top]
        tiles.tile(top, width // 2 // grid.tile_size, height // 2 // grid.tile_size)
        _result(overview_tiles=count + 1, levels=grid.level_count)


def command_line(*argv: str) -> None:
    """``attnmap ARGV`` as the console script runs it."""
    from attnmap.cli.main import main

    main(list(argv))


CASES = {"open": open_read, "segment": segment, "tiles": viewer_tiles, "cli": command_line}


if __name__ == "__main__":
    import attnmap.cli.main  # noqa: F401 - imported before the marker: the import's time is not the case's
    from attnmap.errors import InputError

    print("started", file=sys.stderr, flush=True)
    try:
        CASES[sys.argv[1]](*sys.argv[2:])
    except InputError as error:
        print(f"REFUSED {error}", flush=True)
        raise SystemExit(2) from None
