"""Fine maps on disk: the streamed scale, the map file, and a fine TIFF whose memory does not grow with k."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace

import numpy as np
import pytest
import tifffile
from synthetic_slide_files import write_test_slide

from attnmap.errors import InputError
from attnmap.wsi import open_slide
from attnmap.wsi.heatmap.fine_render import FINE_CMAP, signed_unit, write_fine_heatmap_tiff
from attnmap.wsi.heatmap.fine_store import FineMapFile, FineMapWriter, abs_percentile
from attnmap.wsi.heatmap.renderer import HeatmapRenderer
from attnmap.wsi.heatmap.scores import ColorTable
from attnmap.wsi.heatmap.stream import plan_pyramid
from attnmap.wsi.heatmap.style import HeatmapStyle
from attnmap.wsi.heatmap.tiff import write_heatmap_tiff, write_pyramid_tiff


def test_streamed_percentile_equals_numpy():
    rng = np.random.default_rng(0)
    for trial in range(120):
        n = int(rng.integers(1, 4000))
        values = rng.normal(size=n) * rng.choice([1e-4, 1.0, 1e4])
        values = values.astype((np.float32, np.float64)[trial % 2])
        if trial % 3 == 0:
            values[: n // 2] = 0.0  # ties at zero
        if trial % 5 == 0:
            values = np.round(values)
        parts = np.array_split(values, 1 + trial % 5)
        expected = float(np.percentile(np.abs(values.astype(np.float64)), 99))
        assert abs_percentile(lambda parts=parts: iter(parts), n) == expected
    with pytest.raises(InputError):
        abs_percentile(lambda: iter([np.array([1.0, np.nan])]), 2)


def _grid(width: int, height: int, patch: int, step: int) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(0, width - patch + 1, step), np.arange(0, height - patch + 1, step))
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)


def _write_maps(path, coords, scores, maps, patch: int, batch: int = 7) -> None:
    order = np.argsort(-scores, kind="stable")[: len(maps)]
    with FineMapWriter(
        path, coords, scores, order, maps.shape[1:], patch_size=patch, method="lrp",
        mil_method="lrp", target=1, top_k=None if len(maps) == len(coords) else len(maps),
        metadata={"note": "test"},
    ) as writer:
        for start in range(0, len(maps), batch):
            writer.append(maps[start : start + batch], np.zeros(len(maps[start : start + batch])))


def test_map_file_round_trip_and_atomic(tmp_path):
    rng = np.random.default_rng(1)
    coords = _grid(256, 256, 32, 32)
    scores = rng.normal(size=len(coords))
    maps = rng.normal(size=(20, 16, 16)).astype(np.float32)
    _write_maps(tmp_path / "maps.h5", coords, scores, maps, 32)
    with FineMapFile(tmp_path / "maps.h5") as store:
        assert len(store) == 20 and store.map_shape == (16, 16) and store.patch_size == 32
        assert np.array_equal(store.read(np.array([5, 2, 5])), maps[[5, 2, 5]])
        assert np.array_equal(store.fine_coords, coords[np.argsort(-scores, kind="stable")[:20]])
        assert store.scale == signed_unit(maps)[1] and store.method == "lrp" and store.target == 1
    with pytest.raises(InputError), FineMapWriter(
        tmp_path / "cut.h5", coords, scores, np.arange(3), (16, 16), patch_size=32, method="lrp",
        mil_method="lrp", target=0, top_k=3,
    ) as writer:
        writer.append(maps[:2], np.zeros(2))  # one map short: nothing may appear
    assert not list(tmp_path.glob("*cut*"))


def _in_memory_fine_tiff(path, slide, coords, scores, fine_coords, maps, patch, style, min_pixels=32):
    """The fine TIFF as the in-memory drawing made it: each page's canvas whole, every map in memory."""
    style = replace(style, vis_level=0, roi=None)
    plan = plan_pyramid(slide, 0, 256)
    values, scale = signed_unit(maps)
    colours = ColorTable(FINE_CMAP)

    def page(index):
        downsample = None if index == 0 else plan[index].downsample
        base = HeatmapRenderer(slide, coords, scores, style, patch_size=patch, downsample=downsample)
        width, height = base.size
        canvas = base.render_window(0, 0, width, height).copy()
        if patch / plan[index].downsample >= min_pixels:
            under = base.read_canvas(0, 0, width, height)
            factor = 1.0 / np.asarray(base.scale_xy, dtype=np.float64)
            corners = np.ceil(fine_coords * factor).astype(np.int64)
            pw, ph = np.maximum(1, np.ceil(patch * factor).astype(np.int64))
            for (cx, cy), value in zip(corners, values.astype(np.float32), strict=True):
                import cv2

                value = cv2.resize(value, (int(pw), int(ph)), interpolation=cv2.INTER_NEAREST)
                x1, y1 = min(cx + pw, width), min(cy + ph, height)
                colour = colours(value[: y1 - cy, : x1 - cx].astype(np.float64))
                canvas[cy:y1, cx:x1] = cv2.addWeighted(colour, 0.5, under[cy:y1, cx:x1], 0.5, 0)
        for y in range(0, height, 256):
            for x in range(0, width, 256):
                yield np.ascontiguousarray(canvas[y : y + 256, x : x + 256])

    pages = [(p.size, lambda i=i: page(i)) for i, p in enumerate(plan)]
    write_pyramid_tiff(path, pages, slide.mpp, [p.downsample for p in plan], {})


def test_fine_tiff_from_the_map_file_equals_the_in_memory_drawing(tmp_path):
    slide_path = write_test_slide(tmp_path / "slide.tif", seed=3, size=(512, 384))
    coords = _grid(512, 384, 64, 32)  # overlapping patches: the drawing order matters
    rng = np.random.default_rng(2)
    scores = rng.normal(size=len(coords))
    maps = rng.normal(size=(len(coords) // 2, 16, 16)).astype(np.float32)
    _write_maps(tmp_path / "maps.h5", coords, scores, maps, 64)
    style = HeatmapStyle(cmap="coolwarm", alpha=0.4)
    with open_slide(slide_path) as slide, FineMapFile(tmp_path / "maps.h5") as store:
        write_fine_heatmap_tiff(
            tmp_path / "file.tif", slide, coords, scores, store.fine_coords, store, 64, style
        )
        write_fine_heatmap_tiff(
            tmp_path / "array.tif", slide, coords, scores, store.fine_coords, maps, 64, style
        )
        _in_memory_fine_tiff(
            tmp_path / "oracle.tif", slide, coords, scores, store.fine_coords, maps, 64, style
        )
    pages = [tifffile.TiffFile(tmp_path / f"{name}.tif").pages for name in ("file", "array", "oracle")]
    assert len(pages[0]) == len(pages[2]) == 2
    for streamed, array, oracle in zip(*pages, strict=True):
        assert np.array_equal(streamed.asarray(), oracle.asarray())
        assert np.array_equal(array.asarray(), oracle.asarray())


def _traced_peak(tmp_path, height: int, source: str) -> tuple[int, int]:
    """(peak traced bytes while writing a TIFF, bytes of the maps) on a 256-wide slide, a map per patch.

    ``source``: "file" (fine TIFF from the map file), "array" (fine TIFF from maps in memory) or
    "plain" (today's heatmap TIFF of the same patches, no fine maps).
    """
    slide_path = write_test_slide(tmp_path / f"slide{height}.tif", seed=4, size=(256, height))
    coords = _grid(256, height, 32, 32)
    scores = np.random.default_rng(height).normal(size=len(coords))
    maps = np.random.default_rng(0).normal(size=(len(coords), 64, 64)).astype(np.float32)
    if not (tmp_path / f"maps{height}.h5").is_file():
        _write_maps(tmp_path / f"maps{height}.h5", coords, scores, maps, 32, batch=64)
    nbytes = maps.nbytes
    del maps
    with open_slide(slide_path) as slide, FineMapFile(tmp_path / f"maps{height}.h5") as store:
        fine = store if source != "array" else store.read(np.arange(len(store)))
        tracemalloc.start()
        try:
            if source == "plain":
                write_heatmap_tiff(tmp_path / "p.tif", slide, coords, scores, patch_size=32, progress=False)
            else:
                fine_coords = store.fine_coords
                write_fine_heatmap_tiff(tmp_path / "f.tif", slide, coords, scores, fine_coords, fine, 32)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return peak, nbytes


def test_fine_tiff_memory_does_not_grow_with_the_number_of_maps(tmp_path, monkeypatch):
    """``top_k: all``: 4× the patches (and maps) adds to the fine TIFF's peak only what it adds to the
    plain heatmap TIFF's (the patch table), nothing for the maps; with the maps in memory it adds them.

    One rendering thread, so that how many windows are in flight (and the peak) does not vary.
    """
    import attnmap.wsi.heatmap.stream as stream

    monkeypatch.setattr(stream, "available_cores", lambda: 1)
    _traced_peak(tmp_path, 128, "file")  # first-call allocations (imports, caches) out of the way
    _traced_peak(tmp_path, 128, "plain")
    peaks = {
        (height, source): _traced_peak(tmp_path, height, source)[0]
        for height in (512, 2048)  # 128 maps of 64 × 64 (2 MB), 512 maps (8 MB)
        for source in ("plain", "file", "array")
    }
    growth = 3 * 128 * 64 * 64 * 4
    extra = {height: peaks[height, "file"] - peaks[height, "plain"] for height in (512, 2048)}
    assert extra[2048] - extra[512] < 0.1 * growth, (peaks, growth)
    assert peaks[2048, "array"] - peaks[512, "array"] > growth, (peaks, growth)  # the baseline follows k
