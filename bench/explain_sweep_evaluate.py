"""The explain_cli_sweep's `attnmap evaluate` cases: the shapes images, MIL patch flipping on bags, and
a `wsi run` folder against annotations (see explain_cli_sweep.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import explain_sweep_harness as harness
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' slide writers


def _evaluate(
    s,
    name: str,
    args: list,
    *,
    out: Path | None = None,
    expect: str | None = "ok",
    files: tuple[str, ...] = (),
    effect_vs: Path | None = None,
) -> tuple[str, Path]:
    """One `attnmap evaluate`; ``files``: what it must write into its folder (checked when it runs)."""
    out = out if out is not None else s.out()
    before = harness.snapshot(s.root, skip=[out])
    code, stdout, stderr = harness.call(["evaluate", *map(str, args), "--out", str(out)])
    cls, detail = harness.classify_exit(code, stderr)
    outside = harness.written_outside(before, harness.snapshot(s.root, skip=[out]), out, s.root)
    if cls == "ok":
        missing = [f for f in files if not (out / f).is_file()]
        nan_rows = [line for line in stdout.splitlines() if "nan" in line.lower() and "|" not in line[:1]]
        if missing:
            cls, detail = "wrong", f"did not write {', '.join(missing)}"
        elif any(f.endswith(".csv") and "nan" in (out / f).read_text().lower() for f in files):
            cls, detail = "wrong", f"NaN in the table: {' / '.join(nan_rows)[:150]}"
        elif effect_vs is not None and not harness.diff_folders(
            effect_vs, out, ignore=lambda f: f.endswith(".json")
        ):
            cls, detail = "ignored", "outputs identical to the base run"
    if outside:
        cls, detail = "outside", f"wrote {', '.join(outside[:3])} outside --out"
    if s.rec.verbose and cls == "crash":
        print(stderr[-2500:])
    s.rec.record(cls, name, detail, expect)
    return cls, out


def _bag(path: Path, n: int, d: int = 8, seed: int = 0, value: float | None = None) -> Path:
    import h5py

    rng = np.random.default_rng(seed)
    features = (
        rng.normal(size=(n, d)).astype(np.float32) if value is None else np.full((n, d), value, np.float32)
    )
    coords = np.stack([np.arange(n) * 64, np.zeros(n, np.int64)], axis=1).astype(np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle["features"] = features
        handle["coords"] = coords
        handle["coords"].attrs["patch_size"] = 64
        handle["coords"].attrs["patch_level"] = 0
    return path


def shapes_cases(s) -> None:
    base = ["--n", "2", "--methods", "attention,rollout"]
    table = ("evaluation.csv", "perturbation_curves.png")
    _, first = _evaluate(s, "shapes: base (n 2)", base, files=table)
    for label, args, expect in [
        ("--n 1", ["--n", "1", "--methods", "attention"], "ok"),
        ("--n 0", ["--n", "0"], "error"),
        ("--n -1", ["--n", "-1"], "error"),
        ("--n huge", ["--n", str(10**12)], "error"),
        ("--methods ''", ["--n", "2", "--methods", ""], "error"),
        ("--methods ','", ["--n", "2", "--methods", ","], "error"),
        ("--methods nope", ["--n", "2", "--methods", "nope"], "error"),
        ("--methods twice", ["--n", "2", "--methods", "attention,attention"], "error"),
        ("--methods random (the baseline)", ["--n", "2", "--methods", "random"], "error"),
        ("--methods all", ["--n", "2", "--methods", "all"], "ok"),
        ("--batch-size 0", [*base, "--batch-size", "0"], "error"),
        ("--batch-size 1", [*base, "--batch-size", "1"], "ok"),
        ("--seed -1", [*base, "--seed", "-1"], "error"),
        ("--seed 2**40", [*base, "--seed", str(2**40)], "ok"),
        ("--seed 10**30", [*base, "--seed", str(10**30)], "error"),
        ("--pointing-tolerance 0", [*base, "--pointing-tolerance", "0"], "ok"),
        ("--pointing-tolerance -1", [*base, "--pointing-tolerance", "-1"], "error"),
        ("--pointing-tolerance huge", [*base, "--pointing-tolerance", str(10**9)], "error"),
        ("--seed 2**43", [*base, "--seed", str(2**43)], "ok"),
        ("--seed 2**63-1", [*base, "--seed", str(2**63 - 1)], "error"),
        ("--data nope", [*base, "--data", "nope"], "error"),
        ("--device gpu", [*base, "--device", "gpu"], "error"),
        ("--device cuda (none here)", [*base, "--device", "cuda"], "error"),
        ("--markdown", [*base, "--markdown"], "ok"),
        ("--model timm, --model-arg not taken", [*base, *s.models["timm"]], "error"),
        ("--model timm:FOLDER (3 classes, 5 labels)", [*base, *s.models["timm_folder"]], "error"),
        ("--model hf:FOLDER (3 classes, 5 labels)", [*base, *s.models["hf"]], "error"),
        ("--model timm:typo", [*base, "--model", "timm:vit_tiny_patch16_22"], "error"),
        ("--model attnmap:patch-vit (headless)", [*base, "--model", "attnmap:patch-vit"], "error"),
        ("--checkpoint with hf:", [*base, *s.models["hf"], "--checkpoint", s.root / "vit.pt"], "error"),
        ("--checkpoint missing", [*base, "--checkpoint", "nope.pt"], "error"),
        ("--checkpoint a folder", [*base, "--checkpoint", s.root / "images"], "error"),
        ("--checkpoint not the shapes model's", [*base, "--checkpoint", s.root / "vit.pt"], "error"),
        ("--checkpoint garbage", [*base, "--checkpoint", s.root / "garbage.pt"], "error"),
    ]:
        files = table if expect == "ok" else ()
        _evaluate(s, f"shapes: {label}", args, expect=expect, files=files)
    _evaluate(s, "shapes: --out an existing file", base, out=s.root / "vit.pt", expect="error")
    _evaluate(s, "shapes: --seed 2 changes the table", [*base, "--seed", "2"], files=table, effect_vs=first)
    _evaluate(
        s,
        "shapes: --pointing-tolerance 0 changes it",
        [*base, "--pointing-tolerance", "0"],
        files=table,
        effect_vs=first,
    )
    _evaluate(
        s,
        "shapes: rerun into the base folder, --methods attention",
        ["--n", "2", "--methods", "attention"],
        out=first,
        files=table,
    )
    rows = (first / "evaluation.csv").read_text().splitlines()
    if any(line.startswith("rollout") for line in rows):
        s.rec.record("stale", "shapes: rerun keeps no row of the earlier run", "rollout row kept", "ok")
    else:
        s.rec.record("ok", "shapes: rerun keeps no row of the earlier run", "", "ok")


def mode_cases(s, mil_base: Path, run_base: Path) -> None:
    """Options of another kind of evaluation: refused, or (before) silently ignored."""
    ck = ["--mil-checkpoint", s.root / "clam.pt", "--bags", s.root / "bags" / "good"]
    m = ["--methods", "attention,occlusion"]
    run = ["--run", s.root / "wsi_run", "--annotations", s.root / "ann"]
    for label, args, vs in [
        ("--n with --bags", [*ck, *m, "--n", "5"], mil_base),
        ("--pointing-tolerance with --bags", [*ck, *m, "--pointing-tolerance", "9"], mil_base),
        ("--model with --bags", [*ck, *m, "--model", "timm:vit_tiny_patch16_224"], mil_base),
        ("--bags with --run", [*run, "--bags", s.root / "bags" / "good"], run_base),
        ("--seed with --run", [*run, "--seed", "7"], run_base),
        ("--bags alone with --n", ["--bags", s.root / "bags" / "good", "--n", "5"], None),
    ]:
        _evaluate(s, f"modes: {label}", args, expect="error", effect_vs=vs)


def mil_cases(s) -> None:
    from synthetic_slide_files import write_clam_checkpoint

    clam = write_clam_checkpoint(s.root / "clam.pt")
    bags = s.root / "bags"
    good = bags / "good"
    _bag(good / "s1.h5", 20, seed=1)
    _bag(good / "s2.h5", 30, seed=2)
    _bag(bags / "other" / "s1.h5", 25, seed=3)  # the same slide id in another folder
    _bag(bags / "one" / "x.h5", 1)
    _bag(bags / "zero" / "x.h5", 0)
    _bag(bags / "dim16" / "x.h5", 10, d=16)
    _bag(bags / "nan" / "x.h5", 10, value=float("nan"))
    _bag(bags / "const" / "x.h5", 10, value=0.0)
    (bags / "corrupt").mkdir()
    (bags / "corrupt" / "x.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 20)
    (bags / "empty").mkdir()
    (bags / "text").mkdir()
    (bags / "text" / "notes.txt").write_text("x")
    ck = ["--mil-checkpoint", clam]
    m = ["--methods", "attention,occlusion"]
    out = ("patch_flipping.csv",)
    _, base = _evaluate(s, "mil: base", [*ck, "--bags", good, *m], files=out)
    _evaluate(
        s,
        "mil: rerun into the base folder, --methods attention",
        [*ck, "--bags", good, "--methods", "attention"],
        out=base,
        files=out,
    )
    kept = [line for line in (base / "patch_flipping.csv").read_text().splitlines() if "occlusion" in line]
    s.rec.record(
        "stale" if kept else "ok",
        "mil: the rerun keeps no row of the earlier run",
        "occlusion row kept" if kept else "",
        "ok",
    )
    _, base = _evaluate(s, "mil: base again", [*ck, "--bags", good, *m], files=out)
    s.mil_base = base
    for label, args, expect in [
        ("--bags only", ["--bags", good], "error"),
        ("--mil-checkpoint only", ck, "error"),
        ("--bags empty folder", [*ck, "--bags", bags / "empty"], "error"),
        ("--bags folder of text", [*ck, "--bags", bags / "text"], "error"),
        ("--bags missing", [*ck, "--bags", bags / "nope"], "error"),
        ("one-patch bag", [*ck, "--bags", bags / "one", *m], None),
        ("zero-patch bag", [*ck, "--bags", bags / "zero", *m], "error"),
        ("16-d bag for an 8-d model", [*ck, "--bags", bags / "dim16", *m], "error"),
        ("NaN features", [*ck, "--bags", bags / "nan", *m], "error"),
        ("constant features", [*ck, "--bags", bags / "const", *m], None),
        ("corrupt h5", [*ck, "--bags", bags / "corrupt", *m], "error"),
        ("--mil-checkpoint a ViT", ["--mil-checkpoint", s.root / "vit.pt", "--bags", good], "error"),
        ("--mil-checkpoint garbage", ["--mil-checkpoint", s.root / "garbage.pt", "--bags", good], "error"),
        ("--methods nope", [*ck, "--bags", good, "--methods", "nope"], "error"),
        ("--methods all", [*ck, "--bags", good, "--methods", "all"], "ok"),
        ("same bag twice", [*ck, "--bags", good / "s1.h5", "--bags", good / "s1.h5", *m], None),
        ("same slide id in two folders", [*ck, "--bags", good, "--bags", bags / "other", *m], None),
        ("--seed changes the random floor", [*ck, "--bags", good, *m, "--seed", "5"], "ok"),
        ("--seed 2**43", [*ck, "--bags", good, *m, "--seed", str(2**43)], "ok"),
    ]:
        files = out if expect == "ok" else ()
        vs = base if "seed" in label else None
        _evaluate(s, f"mil: {label}", args, expect=expect, files=files, effect_vs=vs)


def annotated_cases(s) -> None:
    import yaml
    from synthetic_slide_files import write_test_slide, write_tiny_encoder

    slides = s.root / "slides"
    write_test_slide(slides / "a.tif", seed=0, n_levels=3)
    write_test_slide(slides / "b.tif", seed=1, n_levels=3)
    (s.root / "slides.csv").write_text("slide_id,label\na,0\nb,1\n")
    write_tiny_encoder(s.root / "encoder.pt")
    config = {
        "slides": {"csv": "slides.csv", "data_dir": "slides", "extension": ".tif"},
        "segmentation": {"level": 1, "a_t": 0.05, "a_h": 0.01},
        "patching": {"patch_size": 64, "level": 0},
        "features": {"encoder": "torchscript:encoder.pt", "input_size": 32, "batch_size": 32},
        "model": {"checkpoint": "clam.pt", "class_names": ["normal", "tumour"]},
        "heatmap": {"vis_level": 1, "legend": False},
        "run": {"output_dir": "wsi_run", "device": "cpu"},
    }
    (s.root / "wsi.yaml").write_text(yaml.safe_dump(config))
    code, _, err = harness.call(["wsi", "run", str(s.root / "wsi.yaml")])
    if code != 0:
        s.rec.record("crash", "annotated: the wsi run", err.strip().splitlines()[-1][:200] if err else "")
        return
    run = s.root / "wsi_run"

    def polygon_file(folder: Path, slide: str, points: list | None, text: str | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        feature = {
            "type": "Feature",
            "properties": {"classification": {"name": "Tumor"}},
            "geometry": {"type": "Polygon", "coordinates": [points]},
        }
        body = text if text is not None else json.dumps({"type": "FeatureCollection", "features": [feature]})
        (folder / f"{slide}.geojson").write_text(body)

    inside = [[64, 64], [600, 64], [600, 500], [64, 500], [64, 64]]
    ann = s.root / "ann"
    polygon_file(ann, "a", inside)
    polygon_file(ann, "b", inside)
    polygon_file(s.root / "ann_one", "a", inside)  # b has none: a negative slide
    polygon_file(s.root / "ann_other", "zz", inside)
    polygon_file(s.root / "ann_outside", "a", [[5000, 5000], [6000, 5000], [6000, 6000], [5000, 5000]])
    polygon_file(
        s.root / "ann_huge",
        "a",
        [[-(10**7), -(10**7)], [10**7, -(10**7)], [10**7, 10**7], [-(10**7), -(10**7)]],
    )
    polygon_file(s.root / "ann_broken", "a", None, text="{not json")
    polygon_file(s.root / "ann_degenerate", "a", [[0, 0], [0, 0], [0, 0], [0, 0]])
    (s.root / "ann_empty").mkdir()
    r = ["--run", run]
    out = ("lesions_attention.json",)
    _, s.run_base = _evaluate(s, "annotated: base", [*r, "--annotations", ann], files=out)
    for label, args, expect in [
        ("--run only", r, "error"),
        ("--annotations only", ["--annotations", ann], "error"),
        ("--annotations empty folder", [*r, "--annotations", s.root / "ann_empty"], "error"),
        ("annotations for one slide of two", [*r, "--annotations", s.root / "ann_one"], "ok"),
        ("annotations of another slide id", [*r, "--annotations", s.root / "ann_other"], "error"),
        ("a lesion outside the slide", [*r, "--annotations", s.root / "ann_outside"], None),
        ("a lesion larger than the slide", [*r, "--annotations", s.root / "ann_huge"], None),
        ("a degenerate polygon", [*r, "--annotations", s.root / "ann_degenerate"], None),
        ("broken geojson", [*r, "--annotations", s.root / "ann_broken"], "error"),
        ("--run not a run", ["--run", s.root / "images", "--annotations", ann], "error"),
        ("--run an empty folder", ["--run", s.root / "images" / "empty_dir", "--annotations", ann], "error"),
        ("--methods nope", [*r, "--annotations", ann, "--methods", "nope"], "error"),
        ("--annotations a file", [*r, "--annotations", s.root / "vit.pt"], "error"),
    ]:
        _evaluate(s, f"annotated: {label}", [*args], expect=expect, files=out if expect == "ok" else ())
    _evaluate(
        s,
        "annotated: --out an existing file",
        [*r, "--annotations", ann],
        out=s.root / "vit.pt",
        expect="error",
    )


def evaluate_cases(s) -> None:
    mil_cases(s)  # first: the bags and the CLAM the other groups use
    shapes_cases(s)
    annotated_cases(s)
    mode_cases(s, s.mil_base, s.run_base)
