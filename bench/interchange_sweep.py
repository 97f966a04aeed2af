"""Census of the files attnmap writes for other tools, read the way those tools read them.

Outputs come from the project's own tiny fixtures (`tests/synthetic_slide_files.py`): `wsi run`
with a pyramidal TIFF and a GeoJSON export, once patching level 0 and once level 1 (TIFF at level
1), then `wsi geojson` with and without ``--tissue`` and `mil attention` on the run's features.
Each check reads a file as its consumer does (facts about the formats; no code of those tools):
GeoJSON as RFC 7946 and QuPath 0.3+ exports objects, h5 with plain h5py as CLAM's scripts read
them, TIFFs with openslide-python and tifffile, CSVs with the csv module. Classes: ``ok``,
``wrong`` (a reader gets something other than what attnmap meant), ``crash`` (an exception escaped
the writer or the reader).

    PYTHONPATH=src python bench/interchange_sweep.py [--only SUBSTRING] [-v]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]

from sweep_common import run_cli  # noqa: E402
from synthetic_slide_files import write_pipeline_setup  # noqa: E402

RESULTS: list[tuple[str, str, str]] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    RESULTS.append((name, "ok" if ok else "wrong", detail))


def guarded(name: str):
    def wrap(fn):
        def run(*args):
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - a census records whatever escapes
                RESULTS.append((name, "crash", traceback.format_exc(limit=3).strip().splitlines()[-1]))

        return run

    return wrap


# ---------------------------------------------------------------- GeoJSON


def _segments_cross(p1, p2, p3, p4) -> bool:
    def orient(a, b, c):
        return np.sign((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))

    return (orient(p1, p2, p3) * orient(p1, p2, p4) < 0) and (orient(p3, p4, p1) * orient(p3, p4, p2) < 0)


def _inside(points: np.ndarray, polygon: list) -> np.ndarray:
    """Even-odd ray casting over every ring of a GeoJSON polygon (holes cut out)."""
    inside = np.zeros(len(points), dtype=bool)
    for ring in polygon:
        ring = np.asarray(ring, dtype=np.float64)
        for (x1, y1), (x2, y2) in zip(ring[:-1], ring[1:], strict=True):
            crosses = (y1 > points[:, 1]) != (y2 > points[:, 1])
            with np.errstate(divide="ignore", invalid="ignore"):
                at = x1 + (points[:, 1] - y1) * (x2 - x1) / (y2 - y1)
            inside ^= crosses & (points[:, 0] < at)
    return inside


def _ring_simple(ring: list) -> bool:
    """No two non-adjacent edges of the closed ring cross (the core of OGC validity for one ring)."""
    points = [tuple(p) for p in ring]
    edges = list(zip(points[:-1], points[1:], strict=True))
    n = len(edges)
    for i in range(n):
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue
            if _segments_cross(*edges[i], *edges[j]):
                return False
    return len(set(points[:-1])) == len(points) - 1  # no repeated vertex (a pinched ring)


def _strict_json(text: str):
    def refuse(token):
        raise ValueError(f"non-JSON number {token}")

    return json.loads(text, parse_constant=refuse)


def check_geojson(label: str, path: Path, slide_size: tuple[int, int], tissue_expected: bool | None) -> None:
    text = path.read_text()
    try:
        data = _strict_json(text)
    except ValueError as exc:
        check(f"{label}: strict JSON (no NaN/Infinity)", False, str(exc))
        return
    check(f"{label}: strict JSON (no NaN/Infinity)", True)
    check(
        f"{label}: FeatureCollection",
        data.get("type") == "FeatureCollection" and isinstance(data.get("features"), list),
    )
    features = data["features"]
    width, height = slide_size
    bad_rings, outside, invalid, bad_props, kinds = [], [], [], [], Counter()
    for index, feature in enumerate(features):
        geometry, props = feature.get("geometry") or {}, feature.get("properties") or {}
        if feature.get("type") != "Feature" or geometry.get("type") != "Polygon":
            bad_rings.append(index)
            continue
        for ring in geometry["coordinates"]:
            flat = np.asarray(ring, dtype=np.float64)
            if len(ring) < 4 or ring[0] != ring[-1]:
                bad_rings.append(index)
            if not np.isfinite(flat).all():
                bad_rings.append(index)
            elif (
                flat[:, 0].min() < 0
                or flat[:, 1].min() < 0
                or flat[:, 0].max() > width
                or flat[:, 1].max() > height
            ):
                outside.append(index)
            if len(ring) >= 4 and not _ring_simple(ring):
                invalid.append(index)
        kind = props.get("objectType")
        kinds[kind] += 1
        classification = props.get("classification")
        measurements = props.get("measurements", {})
        if kind not in ("detection", "annotation") or (
            classification is not None
            and not (isinstance(classification, dict) and isinstance(classification.get("name"), str))
        ):
            bad_props.append(index)
        if not isinstance(measurements, dict) or not all(
            isinstance(v, (int, float)) and math.isfinite(v) for v in measurements.values()
        ):
            bad_props.append(index)
    check(
        f"{label}: every feature a Polygon, rings closed with >= 4 finite positions",
        not bad_rings,
        f"features {bad_rings[:5]}",
    )
    check(
        f"{label}: coordinates level-0 px inside the {width}x{height} slide",
        not outside,
        f"features {outside[:5]}",
    )
    check(
        f"{label}: rings simple (no crossing edges, no repeated vertex)",
        not invalid,
        f"features {invalid[:5]}",
    )
    check(
        f"{label}: QuPath objectType / classification{{name}} / measurements{{name: number}}",
        not bad_props,
        f"features {bad_props[:5]}",
    )
    tissue = [
        f["geometry"]["coordinates"]
        for f in features
        if (f.get("properties") or {}).get("objectType") == "annotation"
    ]
    if tissue:  # tissue contours on the patches' scale: every patch touches the tissue
        squares = [
            np.asarray(f["geometry"]["coordinates"][0][:4], dtype=np.float64)
            for f in features
            if (f.get("properties") or {}).get("objectType") == "detection"
        ]
        covered = np.zeros(len(squares), dtype=bool)
        for offset in ((0, 0), (-1, -1), (1, -1), (-1, 1), (1, 1)):  # centre and 4 points at ±size/4
            probes = np.array([q.mean(axis=0) + np.multiply(offset, np.ptp(q, axis=0) / 4) for q in squares])
            for polygon in tissue:
                covered |= _inside(probes, polygon)
        check(
            f"{label}: every patch touches a tissue annotation (same level-0 scale)",
            bool(covered.all()),
            f"{covered.mean():.0%} touch",
        )
    ids = [f.get("id") for f in features]
    check(
        f"{label}: every feature has an id, ids unique (as QuPath 0.4 exports)",
        all(isinstance(i, str) for i in ids) and len(set(ids)) == len(ids),
        f"{sum(i is None for i in ids)} without id, {len(ids) - len(set(ids))} repeated",
    )
    if tissue_expected is not None:
        check(
            f"{label}: tissue annotations present iff asked",
            (kinds["annotation"] > 0) == tissue_expected,
            f"{dict(kinds)}",
        )
    # attnmap's own reader: detections are skipped (with a warning), tissue annotations read as regions
    import warnings

    from attnmap.wsi.annotations import load_annotations

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        regions = load_annotations(path)
    named = any("detection" in str(w.message) for w in caught)
    check(
        f"{label}: load_annotations reads the tissue as regions, names the detections skipped",
        len(regions) == kinds["annotation"] and named,
        f"{len(regions)} regions, warned={named}",
    )


# ---------------------------------------------------------------- h5


def check_h5(label: str, run: Path, slide_id: str, patch_level: int, patch_size: int) -> None:
    import h5py

    patches = run / "patches" / f"{slide_id}.h5"
    features = run / "features" / "h5_files" / f"{slide_id}.h5"
    blockmap = run / "heatmaps" / slide_id / f"{slide_id}_blockmap.h5"
    check(
        f"{label}: one file per slide named as CLAM (patches/<id>.h5, features/h5_files/<id>.h5, "
        "pt_files/<id>.pt)",
        patches.is_file()
        and features.is_file()
        and (run / "features" / "pt_files" / f"{slide_id}.pt").is_file(),
    )
    with h5py.File(patches, "r") as handle:
        coords = handle["coords"]
        attrs = dict(coords.attrs)
        check(
            f"{label}: patches coords (N,2) int",
            coords.ndim == 2 and coords.shape[1] == 2 and coords.dtype.kind == "i",
        )
        check(
            f"{label}: patches coords attrs patch_size / patch_level as patched",
            int(attrs.get("patch_size", -1)) == patch_size
            and int(attrs.get("patch_level", -1)) == patch_level,
            f"{ {k: attrs.get(k) for k in ('patch_size', 'patch_level')} }",
        )
        patch_coords = coords[:]
    with h5py.File(features, "r") as handle:
        feats, coords = handle["features"], handle["coords"]
        check(
            f"{label}: features (N,D) float, coords (N,2) int, same N",
            feats.ndim == 2
            and feats.dtype.kind == "f"
            and coords.ndim == 2
            and coords.shape[1] == 2
            and coords.dtype.kind == "i"
            and len(feats) == len(coords),
        )
        check(f"{label}: features coords are the patches' coords", np.array_equal(coords[:], patch_coords))
    with h5py.File(blockmap, "r") as handle:
        scores, coords = handle["attention_scores"], handle["coords"]
        check(
            f"{label}: blockmap attention_scores (N,1) float, coords (N,2) int",
            scores.ndim == 2
            and scores.shape[1] == 1
            and scores.dtype.kind == "f"
            and coords.shape == (len(scores), 2)
            and coords.dtype.kind == "i",
        )
        size = handle.attrs.get("patch_size", coords.attrs.get("patch_size"))
        level0 = patch_size * 2**patch_level  # the fixture's levels halve
        numbers = {k: handle.attrs.get(k) for k in ("patch_size", "prediction", "branch", "attention_branch")}
        check(
            f"{label}: blockmap attrs patch_size / prediction / branch / attention_branch are numbers "
            "(as mil attention's h5 stores branch)",
            all(isinstance(v, (int, np.integer)) for v in numbers.values()),
            f"{ {k: repr(v) for k, v in numbers.items()} }",
        )
        check(
            f"{label}: blockmap patch_size is the level-0 footprint of the coords' patches",
            size is not None and int(size) == level0,
            f"patch_size={size}, level-0 footprint {level0}",
        )


def check_attention_h5(label: str, out: Path, slide_id: str, n: int) -> None:
    import h5py

    path = out / f"{slide_id}_attention.h5"
    with h5py.File(path, "r") as handle:
        check(
            f"{label}: attention h5 coords (N,2) int, attention_scores (N,1) float",
            handle["coords"].shape == (n, 2)
            and handle["coords"].dtype.kind == "i"
            and handle["attention_scores"].shape == (n, 1)
            and handle["attention_scores"].dtype.kind == "f",
        )
        attrs = {k: handle.attrs[k] for k in ("prediction", "branch", "n_patches")}
        check(
            f"{label}: attention h5 prediction / branch / n_patches numbers",
            all(isinstance(v, (int, np.integer)) for v in attrs.values()),
            f"{attrs}",
        )


# ---------------------------------------------------------------- CSV


def check_csv(label: str, path: Path, key: tuple[str, ...], expected_rows: int, numeric: list[str]) -> None:
    text = path.read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    check(
        f"{label}: header has {key} and {numeric}",
        bool(rows) and all(k in rows[0] for k in key) and all(c in rows[0] for c in numeric),
        f"{list(rows[0]) if rows else []}",
    )
    distinct = {tuple(r.get(k) for k in key) for r in rows}
    check(
        f"{label}: one row per {key}",
        len(rows) == expected_rows and len(distinct) == len(rows),
        f"{len(rows)} rows for {expected_rows}",
    )
    bad = [(c, r[c]) for r in rows for c in numeric if c in r and not _plain_number(r[c])]
    check(f"{label}: numbers in C locale (no comma decimals, no NaN)", not bad, f"{bad[:3]}")


def _plain_number(text: str) -> bool:
    try:
        return "," not in text and math.isfinite(float(text))
    except ValueError:
        return False


# ---------------------------------------------------------------- TIFF


def check_tiff(
    label: str, path: Path, png: Path, blockmap: Path, slide: Path, tiff_level: int, png_downsample: float
) -> None:
    import h5py
    import openslide
    import tifffile
    from PIL import Image

    source = openslide.OpenSlide(str(slide))
    heat = openslide.OpenSlide(str(path))
    with tifffile.TiffFile(path) as tif:
        pages = list(tif.pages)
        n_pages = len(pages)
        subfiles = [p.tags["NewSubfileType"].value if "NewSubfileType" in p.tags else 0 for p in pages]
        resolution = [p.tags["XResolution"].value for p in pages if "XResolution" in p.tags]
        unit = [p.tags["ResolutionUnit"].value for p in pages if "ResolutionUnit" in p.tags]
        descriptions = [
            p.tags["ImageDescription"].value if "ImageDescription" in p.tags else None for p in pages
        ]
    check(
        f"{label}: OpenSlide sees every page as a level",
        heat.level_count == n_pages,
        f"{heat.level_count} levels for {n_pages} pages",
    )
    check(f"{label}: reduced pages subfiletype 1", subfiles == [0] + [1] * (n_pages - 1), f"{subfiles}")
    base = source.level_downsamples[tiff_level]
    w0, h0 = source.dimensions
    expected_dims = heat.level_dimensions[0] == source.level_dimensions[tiff_level]
    check(
        f"{label}: level 0 is the slide's level {tiff_level}",
        expected_dims,
        f"{heat.level_dimensions[0]} vs {source.level_dimensions[tiff_level]}",
    )
    ratios = [d / heat.level_downsamples[0] for d in heat.level_downsamples]
    check(
        f"{label}: level downsamples 1, 2, 4, ...",
        all(abs(r - 2**i) / 2**i < 0.02 for i, r in enumerate(ratios)),
        f"{heat.level_downsamples}",
    )
    mpp_slide = float(source.properties.get("openslide.mpp-x", "nan"))
    mpp_heat = float(heat.properties.get("openslide.mpp-x", "nan"))
    if math.isnan(mpp_slide):  # a slide without a pixel size: the heatmap must not invent one
        check(
            f"{label}: no slide mpp, no heatmap mpp (OpenSlide) and no physical unit (tifffile)",
            math.isnan(mpp_heat) and all(u in (1, None) for u in unit),
            f"heatmap mpp {mpp_heat}, units {unit}",
        )
    else:
        check(
            f"{label}: OpenSlide mpp of level 0 = slide mpp x {base:g}",
            abs(mpp_heat - mpp_slide * base) < 1e-6,
            f"heatmap {mpp_heat}, slide {mpp_slide}",
        )
        per_page = [1e4 / (r[0] / r[1]) for r in resolution]
        check(
            f"{label}: tifffile: every page's resolution (cm) = its own mpp",
            len(per_page) == n_pages
            and all(u == 3 for u in unit)
            and all(
                abs(per_page[i] - mpp_slide * base * 2**i) < 1e-3 * mpp_slide * 2**i for i in range(n_pages)
            ),
            f"{per_page}",
        )
    try:
        json.loads(descriptions[0] or "")
        parsed = True
    except ValueError:
        parsed = False
    check(
        f"{label}: page 0's ImageDescription (openslide.comment) is the JSON record, no other page has one",
        parsed and not any(descriptions[1:]) and heat.properties.get("openslide.comment") == descriptions[0],
        f"{[None if d is None else d[:30] for d in descriptions]}",
    )
    # the hottest patch: its centre pixel in the TIFF level matching the PNG's downsample vs the PNG
    with h5py.File(blockmap, "r") as handle:
        scores = handle["attention_scores"][:, 0]
        coords = handle["coords"][:]
        size = int(handle.attrs["patch_size"])
    x, y = coords[int(np.argmax(scores))] + size // 2
    picture = np.asarray(Image.open(png).convert("RGB"))
    level = min(range(heat.level_count), key=lambda i: abs(heat.level_downsamples[i] * base - png_downsample))
    ds = heat.level_downsamples[level] * base
    check(
        f"{label}: a TIFF level at the PNG's downsample {png_downsample:g}",
        abs(ds - png_downsample) < 1e-6,
        f"nearest {ds}",
    )
    r = 2
    step = heat.level_downsamples[
        level
    ]  # OpenSlide's coordinates are the TIFF's level 0 (the slide's `base`)
    corner = (int(x / base - r * step), int(y / base - r * step))
    tile = np.asarray(heat.read_region(corner, level, (2 * r + 1,) * 2).convert("RGB"), dtype=np.float64)
    px, py = int(x / png_downsample), int(y / png_downsample)
    ref = picture[py - r : py + r + 1, px - r : px + r + 1].astype(np.float64)
    diff = float(np.abs(tile.mean(axis=(0, 1)) - ref.mean(axis=(0, 1))).max())
    check(
        f"{label}: hot patch colour in the TIFF = the PNG's (JPEG tolerance 12)",
        diff <= 12,
        f"max channel difference {diff:.1f}",
    )
    with tifffile.TiffFile(path) as tif:
        levels = len(tif.series[0].levels)
    check(
        f"{label}: tifffile sees one series whose levels are the pages",
        levels == n_pages,
        f"{levels} levels for {n_pages} pages",
    )
    arr = tifffile.imread(path, level=n_pages - 1)
    check(
        f"{label}: tifffile reads the smallest level as RGB uint8",
        arr is not None and arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8,
        f"{None if arr is None else arr.shape}",
    )


# ---------------------------------------------------------------- the runs


def build_and_check(work: Path, only: str | None) -> None:
    from synthetic_slide_files import write_clam_checkpoint, write_test_slide

    cases = [
        ("level0", {"patching": {"patch_size": 64, "level": 0}, "heatmap": {"tiff": True}}),
        ("level1", {"patching": {"patch_size": 32, "level": 1}, "heatmap": {"tiff": True, "tiff_level": 1}}),
        ("odd-size CLAM_MB", {"patching": {"patch_size": 64, "level": 0}, "heatmap": {"tiff": True}}),
        ("no mpp", {"patching": {"patch_size": 64, "level": 0}, "heatmap": {"tiff": True}}),
    ]
    for name, overrides in cases:
        if only and only not in name:
            continue
        setup = write_pipeline_setup(
            work / name, n_slides=2, overrides={**overrides, "export": {"geojson": True}}
        )
        if name.startswith("odd"):  # a slide whose sides do not halve evenly, and a two-branch model
            write_test_slide(work / name / "slides" / "slide_0.tif", seed=0, size=(1001, 767), n_levels=3)
            write_clam_checkpoint(work / name / "clam.pt", multi_branch=True)
        if name == "no mpp":  # a slide whose file records no pixel size
            for index in range(2):
                write_test_slide(work / name / "slides" / f"slide_{index}.tif", seed=index, mpp=None)
        code, _out, err = run_cli(["wsi", "run", setup])
        if code:
            RESULTS.append((f"{name}: wsi run", "crash", err.strip().splitlines()[-1] if err else str(code)))
            continue
        run = work / name / "out"
        slide = work / name / "slides" / "slide_0.tif"
        import openslide

        size = openslide.OpenSlide(str(slide)).dimensions
        level, patch = overrides["patching"]["level"], overrides["patching"]["patch_size"]
        folder = run / "heatmaps" / "slide_0"
        blockmap = folder / "slide_0_blockmap.h5"
        guarded(f"{name}: run's geojson")(check_geojson)(
            f"{name} run export", folder / "slide_0_scores.geojson", size, None
        )
        for tissue in (False, True):
            out = work / name / f"cli{'_tissue' if tissue else ''}.geojson"
            code, _o, err = run_cli(
                ["wsi", "geojson", blockmap, "-o", out, *(["--tissue"] if tissue else [])]
            )
            if code:
                RESULTS.append((f"{name}: wsi geojson tissue={tissue}", "crash", err.strip()[-200:]))
                continue
            guarded(f"{name}: geojson tissue={tissue}")(check_geojson)(
                f"{name} wsi geojson{' --tissue' if tissue else ''}", out, size, tissue
            )
        guarded(f"{name}: h5")(check_h5)(name, run, "slide_0", level, patch)
        png_level = 1  # write_pipeline_setup draws the PNG at vis_level 1
        from attnmap.wsi.slide import open_slide

        png_ds = float(open_slide(slide).level_downsamples[png_level])
        guarded(f"{name}: tiff")(check_tiff)(
            name,
            folder / "slide_0_heatmap.tif",
            folder / "slide_0_heatmap.png",
            blockmap,
            slide,
            overrides["heatmap"].get("tiff_level", 0),
            png_ds,
        )
        guarded(f"{name}: predictions.csv")(check_csv)(
            f"{name} predictions.csv", run / "predictions.csv", ("slide_id",), 2, ["p_0", "p_1"]
        )
        attention = work / name / "attention"
        code, _o, err = run_cli(
            [
                "mil",
                "attention",
                work / name / "clam.pt",
                run / "features" / "h5_files" / "slide_0.h5",
                run / "features" / "h5_files" / "slide_1.h5",
                "-o",
                attention,
                "--device",
                "cpu",
            ]
        )
        if code:
            RESULTS.append((f"{name}: mil attention", "crash", err.strip()[-200:]))
            continue
        import h5py

        with h5py.File(run / "features" / "h5_files" / "slide_0.h5", "r") as handle:
            n = len(handle["coords"])
        guarded(f"{name}: attention h5")(check_attention_h5)(f"{name} mil attention", attention, "slide_0", n)
        guarded(f"{name}: attention csv")(check_csv)(
            f"{name} attention csv",
            attention / "slide_0_attention.csv",
            ("x", "y"),
            n,
            ["attention_raw", "attention_softmax"]
            + (["raw_branch0", "raw_branch1"] if name.startswith("odd") else []),
        )
        guarded(f"{name}: mil predictions csv")(check_csv)(
            f"{name} mil predictions.csv", attention / "predictions.csv", ("slide_id",), 2, ["p_0", "p_1"]
        )
        if name == "level0":  # a .pt bag has no coordinates: patches are named by index
            guarded(f"{name}: .pt bag")(check_pt_bag)(name, work / name, run, n)


@guarded("a .pt bag through mil attention")
def check_pt_bag(name: str, root: Path, run: Path, n: int) -> None:
    import h5py

    out = root / "attention_pt"
    code, _o, err = run_cli(
        [
            "mil",
            "attention",
            root / "clam.pt",
            run / "features" / "pt_files" / "slide_0.pt",
            "-o",
            out,
            "--device",
            "cpu",
        ]
    )
    if code:
        RESULTS.append((f"{name}: mil attention on a .pt bag", "crash", err.strip()[-200:]))
        return
    with h5py.File(out / "slide_0_attention.h5", "r") as handle:
        check(
            f"{name} .pt bag: attention h5 without coords has patch_index 0..N-1",
            "coords" not in handle and np.array_equal(handle["patch_index"][:], np.arange(n)),
        )
    check_csv(
        f"{name} .pt bag attention csv", out / "slide_0_attention.csv", ("patch_index",), n, ["attention_raw"]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        build_and_check(Path(folder), args.only)
    elapsed = time.perf_counter() - start
    counts = Counter(kind for _n, kind, _d in RESULTS)
    for name, kind, detail in RESULTS:
        if args.verbose or kind != "ok":
            print(f"{kind:6} {name}" + (f"  [{detail}]" if kind != "ok" and detail else ""))
    import attnmap

    print(f"attnmap from {Path(attnmap.__file__).parent}; bench at commit {commit}")
    print(
        f"commit {commit}: {len(RESULTS)} checks: ok {counts['ok']} / wrong {counts['wrong']} / "
        f"crash {counts['crash']}  ({elapsed:.1f} s)"
    )


if __name__ == "__main__":
    main()
