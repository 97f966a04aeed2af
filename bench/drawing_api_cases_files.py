"""The cases of `drawing_api_sweep.py` for the per-patch files: scores h5 (`save_scores_h5`,
`load_scores_h5`), sampled patches (`sample_patches`, `save_patch_samples`) and features h5."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from drawing_api_cases_wsi import COORDS, HOT, RNG, SCORES, P, a_file, slide, slide_pixels
from drawing_api_sweep import Case, refuse


@dataclass
class Stored:
    coords: np.ndarray
    scores: np.ndarray


def scores_io_cases() -> list[Case]:
    from attnmap.wsi import load_scores_h5, sample_patches, save_patch_samples, save_scores_h5

    def round_trip(path_of, coords=COORDS, scores=SCORES, **options):
        def call(folder: Path):
            path = save_scores_h5(path_of(folder), coords, scores, **options)
            return Stored(*load_scores_h5(path))

        return call

    def same(coords=COORDS, scores=SCORES):
        want_s = np.asarray(
            torch.as_tensor(scores).detach() if isinstance(scores, torch.Tensor) else scores, np.float64
        ).ravel()

        def check(result: object) -> str | None:
            ok = np.array_equal(result.coords, np.asarray(coords)) and np.allclose(
                result.scores, want_s, equal_nan=True
            )
            return None if ok else "read back differs"

        return check

    def h5(name: str):
        return lambda f: f / name

    def top_first(result: object) -> str | None:
        coords, percentiles = result
        ok = np.array_equal(coords[0], COORDS[HOT]) and np.all(np.diff(percentiles) <= 0) and len(coords) == 3
        return None if ok else f"picked {coords.tolist()[:3]}"

    def crops_match(paths: object) -> str | None:
        from PIL import Image

        paths = list(paths)
        if len(paths) != 2:
            return f"{len(paths)} crops"
        with Image.open(paths[0]) as image:
            crop = np.asarray(image.convert("RGB"))
        x, y = COORDS[HOT]
        return (
            None
            if np.array_equal(crop, slide_pixels()[y : y + P, x : x + P])
            else "top crop is not the hot patch"
        )

    def samples(folder_of, **options):
        return lambda f: save_patch_samples(
            slide(), COORDS, SCORES, folder_of(f), **{"patch_size": P, "top_k": 1, "bottom_k": 1, **options}
        )

    bad_h5 = "bad.h5"
    return [
        Case(
            "scores h5",
            "round trip float32",
            round_trip(h5("s.h5"), scores=SCORES.astype(np.float32)),
            same(scores=SCORES.astype(np.float32)),
        ),
        Case(
            "scores h5",
            "odd name, folder missing",
            round_trip(lambda f: f / "a b" / "slide #1 (ä)_blockmap.h5"),
            same(),
        ),
        Case(
            "scores h5", "path is a folder", lambda f: save_scores_h5(f, COORDS, SCORES), refuse, ("error",)
        ),
        Case(
            "scores h5",
            "NaN score kept",
            round_trip(h5("s.h5"), scores=np.where(SCORES == 1, np.nan, SCORES)),
            same(scores=np.where(SCORES == 1, np.nan, SCORES)),
            ("ok", "error"),
        ),
        Case(
            "scores h5", "bool scores", round_trip(h5("s.h5"), scores=SCORES > 0.4), same(scores=SCORES > 0.4)
        ),
        Case(
            "scores h5",
            "torch requires_grad scores",
            round_trip(h5("s.h5"), scores=torch.tensor(SCORES, requires_grad=True)),
            same(),
        ),
        Case(
            "scores h5",
            "single patch",
            round_trip(h5("s.h5"), COORDS[:1], SCORES[:1]),
            same(COORDS[:1], SCORES[:1]),
        ),
        Case(
            "scores h5",
            "scores (N, 2)",
            round_trip(h5("s.h5"), scores=np.c_[SCORES, SCORES]),
            refuse,
            ("error",),
        ),
        Case("scores h5", "fewer scores", round_trip(h5("s.h5"), scores=SCORES[:-1]), refuse, ("error",)),
        Case("scores h5", "empty", round_trip(h5("s.h5"), COORDS[:0], SCORES[:0]), refuse, ("error", "ok")),
        Case(
            "scores h5",
            "attrs of odd types",
            round_trip(h5("s.h5"), attrs={"a": None, "b": [1, 2], "c": {"d": 1}}),
            same(),
        ),
        Case("scores h5", "load missing file", lambda f: load_scores_h5(f / "none.h5"), refuse, ("error",)),
        Case(
            "scores h5",
            "load a text file",
            lambda f: (f / bad_h5).write_text("x") and load_scores_h5(f / bad_h5),
            refuse,
            ("error",),
        ),
        Case("sample_patches", "top 3", lambda _: sample_patches(COORDS, SCORES, 3), top_first),
        Case(
            "sample_patches",
            "k larger than N",
            lambda _: sample_patches(COORDS[:4], SCORES[:4], 10),
            lambda r: None if len(r[0]) == 4 else f"{len(r[0])} picked",
        ),
        Case(
            "sample_patches", "k negative", lambda _: sample_patches(COORDS, SCORES, -1), refuse, ("error",)
        ),
        Case("sample_patches", "k float", lambda _: sample_patches(COORDS, SCORES, 2.5), refuse, ("error",)),
        Case(
            "sample_patches",
            "NaN score",
            lambda _: sample_patches(COORDS, np.where(SCORES == 1, np.nan, SCORES), 1),
            lambda r: (
                "NaN picked as the top patch"
                if np.array_equal(r[0][0], COORDS[HOT])
                else ("percentiles NaN" if np.isnan(r[1]).any() else None)
            ),
            ("error",),
        ),
        Case(
            "sample_patches",
            "unknown mode",
            lambda _: sample_patches(COORDS, SCORES, 1, "random"),
            refuse,
            ("error",),
        ),
        Case("save_patch_samples", "top and bottom crops", samples(lambda f: f / "out"), crops_match),
        Case(
            "save_patch_samples",
            "out_dir is a file",
            samples(lambda f: a_file(f / "file")),
            refuse,
            ("error",),
        ),
        Case(
            "save_patch_samples",
            "patch_size 0",
            samples(lambda f: f / "out", patch_size=0),
            refuse,
            ("error",),
        ),
        Case(
            "save_patch_samples",
            "level the slide lacks",
            samples(lambda f: f / "out", level=2),
            refuse,
            ("error",),
        ),
        Case(
            "save_patch_samples", "top_k negative", samples(lambda f: f / "out", top_k=-1), refuse, ("error",)
        ),
    ]


def features_cases() -> list[Case]:
    from attnmap.wsi import load_features, save_features

    feats = RNG.normal(size=(len(COORDS), 8))

    def round_trip(path_of, features=feats, coords=COORDS):
        def call(folder: Path):
            return load_features(save_features(path_of(folder), features, coords))

        return call

    def same(features=feats, coords=COORDS):
        def check(result: object) -> str | None:
            got_f, got_c = result
            want = np.asarray(
                features.detach() if isinstance(features, torch.Tensor) else features, np.float32
            )
            ok = got_f.dtype == np.float32 and np.array_equal(got_f, want, equal_nan=True)
            return None if ok and np.array_equal(got_c, coords) else "read back differs"

        return check

    nan_feats = feats.copy()
    nan_feats[0, 0] = np.nan
    return [
        Case("features h5", "round trip float64", round_trip(lambda f: f / "x.h5"), same()),
        Case(
            "features h5",
            "odd name, folder missing",
            round_trip(lambda f: f / "n e w" / "slide #1 (ä).h5"),
            same(),
        ),
        Case(
            "features h5",
            "torch requires_grad",
            round_trip(lambda f: f / "x.h5", torch.tensor(feats, requires_grad=True)),
            same(),
        ),
        Case(
            "features h5",
            "NaN kept",
            round_trip(lambda f: f / "x.h5", nan_feats),
            same(nan_feats),
            ("ok", "error"),
        ),
        Case(
            "features h5",
            "empty (0, D)",
            round_trip(lambda f: f / "x.h5", feats[:0], COORDS[:0]),
            same(feats[:0], COORDS[:0]),
        ),
        Case(
            "features h5", "path is a folder", lambda f: save_features(f, feats, COORDS), refuse, ("error",)
        ),
        Case(
            "features h5",
            "features 1-D",
            lambda f: save_features(f / "x.h5", feats[:, 0], COORDS),
            refuse,
            ("error",),
        ),
        Case(
            "features h5",
            "lengths differ",
            lambda f: save_features(f / "x.h5", feats[:-1], COORDS),
            refuse,
            ("error",),
        ),
        Case("features h5", "load missing file", lambda f: load_features(f / "none.h5"), refuse, ("error",)),
        Case(
            "features h5",
            "load a text file",
            lambda f: (f / "b.h5").write_text("x") and load_features(f / "b.h5"),
            refuse,
            ("error",),
        ),
    ]
