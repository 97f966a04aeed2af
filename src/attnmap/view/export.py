"""`attnmap view --export DIR`: the viewer as a static folder that opens from disk or any static host.

Every URL the page can ask for is written as a file with the same relative path, from the same
`ViewerContent` the server uses, so what one shows the other shows. Overlay tiles where nothing is
drawn are left out (the page shows nothing there either way), which is why an earlier export in
the same folder is cleared first: its tile of a patch, layer or slide that is gone would still show.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from tqdm import tqdm

from attnmap.errors import InputError
from attnmap.view.app import TOP_K, ViewerContent
from attnmap.view.deepzoom import DeepZoomGrid


def _static_files(node, prefix: str):
    for child in node.iterdir():
        if child.is_dir():
            yield from _static_files(child, f"{prefix}{child.name}/")
        elif child.is_file():
            yield f"{prefix}{child.name}"


def export_static(content: ViewerContent, out_dir: str | Path, progress: bool = False) -> Path:
    """Write the page, its data and every tile under ``out_dir``; returns the page's path."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--export target {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "index.html").is_file():
        raise InputError(f"--export target {out} is a non-empty folder that is not a viewer export")
    for owned in ("tiles", "data", "thumbs", "static"):  # an earlier export's files (index.html checked)
        if (out / owned).is_dir():
            shutil.rmtree(out / owned)
    urls = ["index.html", "data/slides.js"]
    urls += [
        f"static/{name}"
        for name in _static_files(resources.files("attnmap.view") / "static", "")
        if name != "index.html"
    ]
    for index, slide in enumerate(content.slides):
        grid = DeepZoomGrid(content.slide_tiles(index).slide.dimensions)
        layers = ["slide"] + [f"heat-{m}" for m in range(len(slide.score_sets))]
        layers += [name for name in ("tissue", "annotations") if getattr(slide, name)]
        urls.append(f"data/{index}/info.js")
        for m, score_set in enumerate(slide.score_sets.values()):
            urls.append(f"data/{index}/patches-{m}.js")
            urls += [f"thumbs/{index}/{m}/{r}.jpeg" for r in range(1, min(TOP_K, len(score_set.scores)) + 1)]
        for layer in layers:
            urls.append(f"tiles/{index}/{layer}.dzi")
            fmt = "jpeg" if layer == "slide" else "png"
            urls += [
                f"tiles/{index}/{layer}_files/{level}/{col}_{row}.{fmt}"
                for level, (cols, rows) in enumerate(grid.level_tiles)
                for row in range(rows)
                for col in range(cols)
            ]
    for url in tqdm(urls, desc="export", unit="file", disable=not progress):
        body, _ = content.get(url)
        if url.endswith(".png") and url.startswith("tiles/") and body == content.empty_png:
            continue
        target = out / url
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
    return out / "index.html"
