"""`attnmap view --export DIR`: the viewer as a static folder that opens from disk or any static host.

Every URL the page can ask for is written as a file with the same relative path, from the same
`ViewerContent` the server uses, so what one shows the other shows. Overlay tiles where nothing is
drawn are left out (the page shows nothing there either way); each overlay's descriptor in the
slide's info lists, per level, which tiles were written, so the page never asks a static host or
the disk for a missing file (each would be a console error). An earlier export in the same folder
is cleared first: its tile of a patch, layer or slide that is gone would still show.

Why the page and the slide list are written last (and an earlier export's page removed first): an
export stopped midway (Ctrl+C) had both, and opened as a whole export whose later slides failed one
by one in the browser. Stopped, it now has no page to open; ``data/version.js``, written first,
still marks it as an export, so the next export into the folder takes it over.
"""

from __future__ import annotations

import base64
import errno
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
from tqdm import tqdm

from attnmap.errors import InputError
from attnmap.view.app import ViewerContent, _js
from attnmap.view.deepzoom import DeepZoomGrid
from attnmap.view.payloads import TOP_K


def _static_files(node, prefix: str):
    for child in node.iterdir():
        if child.is_dir():
            yield from _static_files(child, f"{prefix}{child.name}/")
        elif child.is_file():
            yield f"{prefix}{child.name}"


VERSION_FILE = "data/version.js"
"""The file every export writes first: what marks a folder as an export, finished or stopped."""


def is_export(out: Path) -> bool:
    """Whether ``out`` holds an earlier export, finished or stopped midway: its `VERSION_FILE`.

    Why not the page: any folder with an ``index.html`` (the demo's, a web site's) passed for one,
    and exporting into it replaced its page and deleted its ``data/`` and ``static/``; and a stopped
    export has no page (it is written last).
    """
    try:
        with open(out / VERSION_FILE, "rb") as handle:
            return handle.read(32).startswith(b'attnmapData("version"')
    except OSError:
        return False


def _prepare(out: Path) -> None:
    """Check and create the target before any tile is drawn: a bad target fails in one line, at once."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--export target {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not is_export(out):
        raise InputError(f"--export target {out} is a non-empty folder that is not a viewer export")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".attnmap-export-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            reason = "not writable"
        raise InputError(f"--export target {out}: {reason}") from None
    if (out / "index.html").is_file() and is_export(out):  # its page first: stopped, no page is left
        (out / "index.html").unlink()
    for owned in ("tiles", "data", "thumbs", "static"):  # an earlier export's files (checked above)
        if (out / owned).is_dir():
            shutil.rmtree(out / owned)


def _write(out: Path, url: str, body: bytes) -> None:
    target = out / url
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(body)


def export_static(content: ViewerContent, out_dir: str | Path, progress: bool = False) -> Path:
    """Write the page, its data and every tile under ``out_dir``; returns the page's path."""
    out = Path(out_dir)
    _prepare(out)
    urls = [VERSION_FILE] + [
        f"static/{name}"
        for name in _static_files(resources.files("attnmap.view") / "static", "")
        if name != "index.html"
    ]
    last = ["data/slides.js", "index.html"]  # the slide list and the page: once every slide is written
    layers_of: list[list[str]] = []
    total = len(urls) + len(last)
    for index, slide in enumerate(content.slides):
        grid = DeepZoomGrid(content.slide_tiles(index).slide.dimensions)
        layers = ["slide"] + [f"heat-{m}" for m in range(len(slide.score_sets))]
        layers += [name for name in ("tissue", "annotations") if getattr(slide, name)]
        layers_of.append(layers)
        tiles = sum(cols * rows for cols, rows in grid.level_tiles)
        total += 1 + len(layers) * (tiles + 1)
        total += sum(1 + min(TOP_K, len(s.scores)) for s in slide.score_sets.values())
    with tqdm(total=total, desc="export", unit="file", disable=not progress) as bar:
        for url in urls:
            _write(out, url, content.get(url)[0])
            bar.update()
        for index, slide in enumerate(content.slides):
            for m, score_set in enumerate(slide.score_sets.values()):
                for url in [f"data/{index}/patches-{m}.js"] + [
                    f"thumbs/{index}/{m}/{r}.jpeg" for r in range(1, min(TOP_K, len(score_set.scores)) + 1)
                ]:
                    _write(out, url, content.get(url)[0])
                    bar.update()
            present = {layer: _export_layer(content, out, index, layer, bar) for layer in layers_of[index]}
            info = content.info(index)
            for m, method in enumerate(info["methods"]):
                method["tiles"]["present"] = present[f"heat-{m}"]
            for name in ("tissue", "annotations"):
                if info[name] is not None:
                    info[name]["present"] = present[name]
            _write(out, f"data/{index}/info.js", _js(f"info-{index}", info))
            bar.update()
        for url in last:
            _write(out, url, content.get(url)[0])
            bar.update()
    return out / "index.html"


def _export_layer(content: ViewerContent, out: Path, index: int, layer: str, bar) -> list[str]:
    """Write one layer's .dzi and tiles; per level, a base64 bitset (row-major, least significant bit
    first) of the tiles written (every tile of the slide; overlay tiles where something is drawn)."""
    grid = DeepZoomGrid(content.slide_tiles(index).slide.dimensions)
    _write(out, f"tiles/{index}/{layer}.dzi", content.get(f"tiles/{index}/{layer}.dzi")[0])
    bar.update()
    fmt = "jpeg" if layer == "slide" else "png"
    present = []
    for level, (cols, rows) in enumerate(grid.level_tiles):
        written = np.zeros(cols * rows, dtype=bool)
        for row in range(rows):
            for col in range(cols):
                url = f"tiles/{index}/{layer}_files/{level}/{col}_{row}.{fmt}"
                body, _ = content.get(url)
                bar.update()
                if layer != "slide" and body == content.empty_png:
                    continue
                _write(out, url, body)
                written[row * cols + col] = True
        present.append(base64.b64encode(np.packbits(written, bitorder="little").tobytes()).decode("ascii"))
    return present
