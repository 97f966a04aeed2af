"""The explain_cli_sweep's `attnmap explain` cases: options, inputs and reruns (see explain_cli_sweep.py)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from explain_sweep_api import api_cases
from explain_sweep_evaluate import evaluate_cases
from PIL import Image

HUGE = 10**12


def option_cases(s) -> None:
    img = s.images["one"]
    e = s.explain
    _, _, base = e("base: rollout", [img], ["--method", "rollout"])
    _, _, base_lrp = e("base: lrp (signed, pixels)", [img], ["--method", "lrp"])
    # --model / --checkpoint / --model-arg
    for label, args in {
        "--model empty": ["--model", ""],
        "--model no prefix": ["--model", "vit_tiny_patch16_224"],
        "--model timm: alone": ["--model", "timm:"],
        "--model timm:typo": ["--model", "timm:vit_tiny_patch16_22"],
        "--model hf:missing": ["--model", "hf:nowhere"],
        "--model hf:a file": ["--model", f"hf:{s.root / 'vit.pt'}"],
        "--model timm:an hf folder": ["--model", f"timm:{s.root / 'hf_vit'}"],
        "--model attnmap:nope": ["--model", "attnmap:nope"],
        "--model unknown:prefix": ["--model", "torchscript:vit.pt"],
    }.items():
        e(label, [img], [*args, "--method", "rollout"], model="", expect="error")
    e("--model timm:FOLDER", [img], ["--method", "rollout"], model="timm_folder")
    e(
        "--model hf:a timm folder",
        [img],
        ["--model", f"hf:{s.root / 'timm_folder'}", "--method", "rollout"],
        model="",
        expect=None,
    )
    e("--model hf:FOLDER", [img], ["--method", "rollout,lrp"], model="hf", n_methods=2)
    e("--model attnmap:shapes-vit", [img], ["--method", "rollout"], model="shapes")
    e(
        "--model attnmap:patch-vit, no direction",
        [img],
        ["--model", "attnmap:patch-vit", "--method", "lrp"],
        model="",
        expect="error",
    )
    timm = s.models["timm"][:6]
    for label, extra in {
        "--checkpoint missing": ["--checkpoint", "nope.pt"],
        "--checkpoint a folder": ["--checkpoint", str(s.root / "images")],
        "--checkpoint empty file": ["--checkpoint", str(s.root / "empty.pt")],
        "--checkpoint garbage": ["--checkpoint", str(s.root / "garbage.pt")],
        "--checkpoint an image": ["--checkpoint", str(img)],
        "--checkpoint 5 classes into 3": [
            "--checkpoint",
            str(s.root / "vit_5classes.pt"),
            "--model-arg",
            "num_classes=3",
        ],
        "--checkpoint headless into a head": [
            "--checkpoint",
            str(s.root / "vit_headless.pt"),
            "--model-arg",
            "num_classes=3",
        ],
        "--model-arg no =": ["--model-arg", "depth"],
        "--model-arg =1": ["--model-arg", "=1"],
        "--model-arg depth=x": ["--model-arg", "depth=x"],
        "--model-arg depth=0": ["--model-arg", "depth=0"],
        "--model-arg depth=-1": ["--model-arg", "depth=-1"],
        "--model-arg img_size=8": ["--model-arg", "img_size=8"],
        "--model-arg img_size=0": ["--model-arg", "img_size=0"],
        "--model-arg nonsense=1": ["--model-arg", "nonsense=1"],
    }.items():
        e(label, [img], [*timm, *extra, "--method", "rollout"], model="", expect="error")
    e(
        "--checkpoint 5 classes (size from file)",
        [img],
        [*timm, "--checkpoint", str(s.root / "vit_5classes.pt"), "--method", "rollout"],
        model="",
    )
    e("random weights (no --checkpoint)", [img], [*timm, "--method", "rollout"], model="")
    e(
        "--model-arg with an hf: model",
        [img],
        ["--model-arg", "depth=1", "--method", "rollout"],
        model="hf",
        expect="error",
    )
    e(
        "--model-arg with attnmap:shapes-vit",
        [img],
        ["--model-arg", "depth=1", "--method", "rollout"],
        model="shapes",
        expect="error",
    )
    e(
        "--model-arg with a timm:FOLDER",
        [img],
        ["--model-arg", "depth=1", "--method", "rollout"],
        model="timm_folder",
        expect=None,
    )
    e(
        "--checkpoint with attnmap:shapes-vit",
        [img],
        ["--checkpoint", s.root / "vit.pt", "--method", "rollout"],
        model="shapes",
        expect="error",
    )
    e(
        "--checkpoint (other weights) with hf:",
        [img],
        ["--checkpoint", s.root / "vit.pt", "--method", "rollout"],
        model="hf",
        expect="error",
    )
    e(
        "--target on a headless model",
        [img],
        ["--target", "0", "--method", "lrp"],
        model="headless",
        expect="error",
    )
    e(
        "--direction .pt holding a dict",
        [img],
        ["--method", "lrp", "--direction", s.root / "dir_dict.pt"],
        model="headless",
        expect="error",
    )
    # --method
    for value, expect in {
        "": "error",
        ",": "error",
        " , ": "error",
        "nope": "error",
        "ATTENTION": "error",
        "attention,attention": "error",
        "all,attention": "error",
        "attention,": "ok",
        " attention ": "ok",
        "all": "ok",
        "lrp,rollout": "ok",
        "All": "error",
    }.items():
        n = 8 if value == "all" else (2 if value == "lrp,rollout" else 1)
        e(f"--method {value!r}", [img], ["--method", value], expect=expect, n_methods=n)
    # --target
    for value, expect in {
        "-1": "error",
        "3": "error",
        "2": "ok",
        "0": "ok",
        str(HUGE): "error",
        "x": "error",
        "1.5": "error",
        "-4": "error",
    }.items():
        e(f"--target {value}", [img], ["--method", "grad_rollout", "--target", value], expect=expect)
    e("--target changes grad_rollout", [img], ["--method", "rollout", "--target", "2"], expect="ok")
    _, _, grad0 = e("grad_rollout target 0", [img], ["--method", "grad_rollout", "--target", "0"])
    e("grad_rollout target 1 differs", [img], ["--method", "grad_rollout", "--target", "1"], effect_vs=grad0)
    # --direction / --readout
    for label, args, model, expect in [
        ("--direction (D,)", ["--direction", s.root / "dir192.npy"], "headless", "ok"),
        ("--direction wrong D", ["--direction", s.root / "dir10.npy"], "headless", "error"),
        ("--direction NaN", ["--direction", s.root / "dir_nan.npy"], "headless", "error"),
        ("--direction zeros", ["--direction", s.root / "dir_zero.npy"], "headless", None),
        ("--direction 5 rows, 1 image", ["--direction", s.root / "dir_rows5.npy"], "headless", "error"),
        (
            "--direction 2 rows, 1 image given twice",
            ["--direction", s.root / "rows_two.npy", img],
            "headless",
            "error",
        ),
        ("--direction empty", ["--direction", s.root / "dir_empty.npy"], "headless", "error"),
        ("--direction .txt", ["--direction", s.root / "dir.txt"], "headless", "error"),
        ("--direction missing", ["--direction", s.root / "nope.npy"], "headless", "error"),
        ("--direction a folder", ["--direction", s.root / "images"], "headless", "error"),
        (
            "--direction with --target",
            ["--direction", s.root / "dir192.npy", "--target", "1"],
            "headless",
            "error",
        ),
        ("--direction on a classifier", ["--direction", s.root / "dir192.npy"], "timm", "error"),
        ("--readout without --direction", ["--readout", "cls"], "headless", "error"),
        (
            "--readout cls on a pooled output",
            ["--readout", "cls", "--direction", s.root / "dir192.npy"],
            "headless",
            "error",
        ),
        (
            "--readout bogus",
            ["--readout", "bogus", "--direction", s.root / "dir192.npy"],
            "headless",
            "error",
        ),
        ("headless without a target", [], "headless", "error"),
        ("headless attention without a target", ["--method", "attention"], "headless", "ok"),
    ]:
        method = [] if "--method" in args else ["--method", "lrp"]
        e(label, [img], [*method, *args], model=model, expect=expect)
    # --out
    e("--out an existing file", [img], ["--method", "rollout"], out=s.root / "vit.pt", expect="error")
    e("--out empty string", [img], ["--method", "rollout"], out="", expect="error")
    e("--out nested, not there yet", [img], ["--method", "rollout"], out=s.out("deep/er/still"))
    e("--out with spaces and unicode", [img], ["--method", "rollout"], out=s.out("out dir é 日本"))
    e("--out under a file", [img], ["--method", "rollout"], out=s.root / "vit.pt" / "sub", expect="error")
    # --device, --batch-size, --workers, --scheduler
    for label, args, expect in [
        ("--device gpu", ["--device", "gpu"], "error"),
        ("--device cuda:x", ["--device", "cuda:x"], "error"),
        ("--device cuda (none here)", ["--device", "cuda"], "error"),
        ("--device cuda:0 (none here)", ["--device", "cuda:0"], "error"),
        ("--device cpu", ["--device", "cpu"], "ok"),
        ("--batch-size 0", ["--batch-size", "0"], "error"),
        ("--batch-size -1", ["--batch-size", "-1"], "error"),
        ("--batch-size 1", ["--batch-size", "1"], "ok"),
        ("--batch-size huge", ["--batch-size", str(HUGE)], "ok"),
        ("--workers -1", ["--workers", "-1"], "error"),
        ("--scheduler bogus", ["--scheduler", "not-an-address"], "error"),
    ]:
        e(label, [img], ["--method", "rollout", *args], expect=expect)
    # drawing: --cmap, --alpha, --on, --legend
    for label, args, expect, vs in [
        ("--cmap viridis", ["--cmap", "viridis"], "ok", base),
        ("--cmap jet_r", ["--cmap", "jet_r"], "ok", base),
        ("--cmap opencv:jet", ["--cmap", "opencv:jet"], "ok", base),
        ("--cmap opencv:nope", ["--cmap", "opencv:nope"], "error", None),
        ("--cmap nope", ["--cmap", "nope"], "error", None),
        ("--cmap empty", ["--cmap", ""], "error", None),
        ("--alpha 0", ["--alpha", "0"], "ok", base),
        ("--alpha 1", ["--alpha", "1"], "ok", base),
        ("--alpha -0.1", ["--alpha", "-0.1"], "error", None),
        ("--alpha 1.5", ["--alpha", "1.5"], "error", None),
        ("--alpha nan", ["--alpha", "nan"], "error", None),
        ("--alpha inf", ["--alpha", "inf"], "error", None),
        ("--on original", ["--on", "original"], "ok", base),
        ("--on bogus", ["--on", "bogus"], "error", None),
        ("--no-legend", ["--no-legend"], "ok", base),
    ]:
        e(label, [img], ["--method", "rollout", *args], expect=expect, effect_vs=vs)
    e("--cmap viridis on a signed map", [img], ["--method", "lrp", "--cmap", "viridis"], effect_vs=base_lrp)
    _, _, cls_out = e(
        "--readout cls (tokens model)",
        [img],
        ["--method", "lrp", "--direction", s.root / "dir192.npy", "--readout", "cls"],
        model="tokens",
    )
    e(
        "--readout patch_mean differs",
        [img],
        ["--method", "lrp", "--direction", s.root / "dir192.npy", "--readout", "patch_mean"],
        model="tokens",
        effect_vs=cls_out,
    )
    e(
        "tokens model, --direction without --readout",
        [img],
        ["--method", "lrp", "--direction", s.root / "dir192.npy"],
        model="tokens",
        expect="error",
    )
    _, _, base_all = e("base: --method all", [img], ["--method", "all"], n_methods=8)
    e(
        "--alpha on the all-methods grid",
        [img],
        ["--method", "all", "--alpha", "0.9"],
        n_methods=8,
        effect_vs=base_all,
    )
    e(
        "--on original on the all-methods grid",
        [img],
        ["--method", "all", "--on", "original"],
        n_methods=8,
        effect_vs=base_all,
    )
    e(
        "--cmap on the all-methods grid",
        [img],
        ["--method", "all", "--cmap", "viridis"],
        n_methods=8,
        effect_vs=None,
    )
    # --option
    for value, expect in {
        "start_layer=1": "ok",
        "start_layer=-1": "ok",
        "start_layer=2": "error",
        "start_layer=99": "error",
        "start_layer=1.5": "error",
        "start_layer=True": "error",
        "head_fusion=max": "ok",
        "head_fusion=min": "ok",
        "head_fusion=nope": "error",
        "discard_ratio=0.5": "ok",
        "discard_ratio=1.0": "error",
        "discard_ratio=-0.1": "error",
        "discard_ratio=nan": "error",
        "discard_ratio=inf": "error",
        "layer=0": "error",
        "grad=True": "error",
        "start_layer": "error",
        "=1": "error",
    }.items():
        vs = base if expect == "ok" else None
        e(
            f"--option {value} (rollout)",
            [img],
            ["--method", "rollout", "--option", value],
            expect=expect,
            effect_vs=vs,
        )
    for value, expect in {
        "layer=0": "ok",
        "layer=-2": "ok",
        "layer=-3": "error",
        "layer=2": "error",
        "layer=1e9": "error",
    }.items():
        e(f"--option {value} (attention)", [img], ["--method", "attention", "--option", value], expect=expect)
    e("--option grad=True (lrp_attention)", [img], ["--method", "lrp_attention", "--option", "grad=True"])
    e(
        "--option grad=maybe (lrp_attention)",
        [img],
        ["--method", "lrp_attention", "--option", "grad=maybe"],
        expect="error",
    )
    e(
        "--option twice, last wins",
        [img],
        ["--method", "rollout", "--option", "start_layer=0", "--option", "start_layer=1"],
    )


def input_cases(s) -> None:
    e, im = s.explain, s.images
    m = ["--method", "rollout"]
    _, _, mixed = e(
        "mixed folder (broken files among images)", [im["mixed"]], m, expect="error"
    )  # names them
    readable = ["good", "photo", "UPPER", "grey", "alpha", "palette"]
    missing = [name for name in readable if not (mixed / f"{name}_rollout.npy").is_file()]
    s.rec.record(
        "wrong" if missing else "ok",
        "mixed folder: its readable images explained",
        f"no maps of {', '.join(missing)}" if missing else "",
        "ok",
    )
    e(
        "folder with readme, .DS_Store, ._a.png, a subfolder",
        [im["clean_mixed"]],
        m,
        expected_inputs=[im["clean_mixed"] / "a.png"],
    )
    e("zero-byte file given", [im["mixed"] / "zero.png"], m, expect="error")
    e("corrupt png given", [im["mixed"] / "corrupt.png"], m, expect="error")
    e("truncated jpeg given", [im["mixed"] / "truncated.jpg"], m, expect="error")
    e("html named .png given", [im["mixed"] / "fake.png"], m, expect="error")
    e("text file given", [im["mixed"] / "notes.txt"], m, expect="error")
    e("broken symlink given", [im["mixed"] / "broken_link.png"], m, expect="error")
    e("symlink given", [im["mixed"] / "link.png"], m)
    e("hidden file given", [im["mixed"] / ".hidden.png"], m)
    e(
        "unreadable file (chmod 0; root reads it)",
        [im["unreadable"]],
        m,
        expected_inputs=sorted(im["unreadable"].iterdir()),
    )
    e("empty folder", [im["empty_dir"]], m, expect="error")
    e("folder of text files", [im["only_text"]], m, expect="error")
    e("missing path", [s.root / "nope.png"], m, expect="error")
    e(
        "glob pattern (not expanded by a shell)",
        [str(im["plain"] / "*.png")],
        m,
        expected_inputs=sorted(im["plain"].glob("*.png")),
    )
    e("glob pattern matching nothing", [str(im["plain"] / "*.jpg")], m, expect="error")
    e("same file twice", [im["one"], im["one"]], m, expected_inputs=[im["one"]])
    e("a file and its folder", [im["one"], im["plain"]], m, expected_inputs=sorted(im["plain"].iterdir()))
    e("same stem in two subfolders", [im["stem1"], im["stem2"]], m)
    e(
        "names of 200-240 bytes",
        [im["long"]],
        ["--method", "transformer_attribution"],
        expected_inputs=sorted(im["long"].iterdir()),
    )
    relative, classes = s.out(), []
    for done in ([im["stem1"]], [im["stem1"], im["stem2"]]):  # "a.png" relative to two working folders
        os.chdir(done[-1].parent)
        try:
            run = s.explain(
                "relative", ["a.png"], m, out=relative, record=False, expected_inputs=done, n_methods=None
            )
            classes.append(run[:2])
        finally:
            os.chdir(s.root)
    owners = sorted(json.loads(p.read_text())["image"] for p in relative.glob("*.npy.json"))
    both = [str(im["stem1"]), str(im["stem2"])]
    failed = [f"{cls}: {detail}" for cls, detail in classes if cls != "ok"]
    s.rec.record(
        next((cls for cls, _ in classes if cls != "ok"), "ok" if owners == both else "wrong"),
        "a.png relative to two working folders, one --out",
        "; ".join(failed) or ("" if owners == both else f"maps kept: {owners}"),
        "ok",
    )
    shared = s.out()
    e("same stem, two runs into one folder: first", [im["stem1"]], m, out=shared)
    e(
        "same stem, two runs into one folder: second",
        [im["stem2"]],
        m,
        out=shared,
        expected_inputs=[im["stem1"], im["stem2"]],
    )
    e("same stem, two runs into one folder: both again", [im["stem1"], im["stem2"]], m, out=shared)
    e("a.png, a.jpg and a_2.png", [im["two_ext"]], m, expected_inputs=sorted(im["two_ext"].iterdir()))
    e("A.png and a.png", [im["case"]], m, expected_inputs=sorted(im["case"].iterdir()))
    e(
        "spaces, unicode, quotes, leading dash",
        [im["names"]],
        m,
        expected_inputs=sorted(im["names"].iterdir()),
    )
    for name in ("one_pixel.png", "tiny8.png"):
        e(f"{name} (smaller than a patch)", [im["sizes"] / name], m, expect="error")
    for name in ("patch16.png", "wide.png", "tall.png", "thin_wide.png", "big.png"):
        e(f"{name}", [im["sizes"] / name], m)
        e(f"{name} --on original", [im["sizes"] / name], [*m, "--on", "original"])
    e("wide.png lrp --on original", [im["sizes"] / "wide.png"], ["--method", "lrp", "--on", "original"])
    e(
        "modes: CMYK, 16-bit, float TIFF, black",
        [im["modes"]],
        m,
        expected_inputs=sorted(im["modes"].iterdir()),
    )
    e("an all-black image, every method", [im["black"]], ["--method", "all"], n_methods=8)
    e("sizes on the HF model", [im["sizes"] / "wide.png"], m, model="hf")
    e(
        "batch of differing sizes, batch 3",
        [im["plain"]],
        [*m, "--batch-size", "3"],
        expected_inputs=sorted(im["plain"].iterdir()),
    )
    for name in ("wide.png", "big.png", "tall.png"):
        e(
            f"{name} --on original --no-legend: the original's size",
            [im["sizes"] / name],
            [*m, "--on", "original", "--no-legend"],
            check=_picture_size(im["sizes"] / name),
        )
    e(
        "--no-legend: the model's input size",
        [im["one"]],
        [*m, "--no-legend"],
        check=_picture_size(None, (32, 32)),
    )
    e(
        "EXIF-rotated JPEG --on original --no-legend",
        [im["exif"]],
        [*m, "--on", "original", "--no-legend"],
        check=_picture_size(im["exif"]),
    )
    linked = s.root / "linked_dir"
    os.symlink(im["plain"], linked)
    e("a symlink to a folder", [linked], m, expected_inputs=sorted(linked.iterdir()))
    e("a folder and a symlink to it", [im["plain"], linked], m, expected_inputs=sorted(im["plain"].iterdir()))
    held = s.out()
    held.mkdir(parents=True)
    (held / ".attnmap.lock").write_text(
        json.dumps({"pid": os.getppid(), "host": os.uname().nodename, "command": "attnmap explain"})
    )
    e("--out locked by a live run", [im["one"]], m, out=held, expect="error")
    e(
        "--workers 1, same file twice",
        [im["one"], im["one"]],
        [*m, "--workers", "1"],
        expected_inputs=[im["one"]],
    )
    # the output folder among the inputs
    folder = s.root / "selfref"
    shutil.copytree(im["plain"], folder)
    inputs = sorted(folder.iterdir())
    e("--out inside the input folder", [folder], m, out=folder / "maps", expected_inputs=inputs)
    e("--out inside the input folder, rerun", [folder], m, out=folder / "maps", expected_inputs=inputs)
    for label in ("--out is the input folder", "--out is the input folder, rerun"):
        e(label, [folder], m, out=folder, expect="error", expected_inputs=inputs)
    own = s.root / "ownfolder"
    own.mkdir()
    shutil.copy(im["one"], own / "img0.png")
    e("--out is the image's own folder (file given)", [own / "img0.png"], m, out=own)
    e("  ... rerun", [own / "img0.png"], m, out=own)


def _picture_size(original: Path | None, size: tuple[int, int] | None = None):
    """A check: every overlay PNG is ``size`` (width, height) or the original image's upright size."""

    def check(out: Path) -> list[str]:
        from PIL import ImageOps

        want = size if original is None else ImageOps.exif_transpose(Image.open(original)).size
        return [
            f"{p.name} is {Image.open(p).size}, expected {want}"
            for p in sorted(out.glob("*.png"))
            if Image.open(p).size != tuple(want)
        ]

    return check


def rerun_cases(s) -> None:
    im = s.images
    files = [im["one"], im["one_b"]]
    r = s.rerun
    ga = ["--method", "grad_rollout"]
    r("nothing changed", files, ga, ga)
    r("--target 0 -> 1", files, [*ga, "--target", "0"], [*ga, "--target", "1"])
    r("--method grad_rollout -> rollout", files, ga, ["--method", "rollout"])
    r("--method single -> all", files, ga, ["--method", "all"])
    r(
        "--method single -> all, --target changed",
        files,
        [*ga, "--target", "0"],
        ["--method", "all", "--target", "1"],
    )
    r(
        "--method all -> single, --target changed",
        files,
        ["--method", "all", "--target", "0"],
        [*ga, "--target", "1"],
    )
    r(
        "--method a,b -> b, option changed",
        files,
        ["--method", "rollout,attention"],
        ["--method", "rollout", "--option", "start_layer=1"],
    )
    r("--alpha 0.5 -> 0.2", files, ga, [*ga, "--alpha", "0.2"])
    r("--cmap -> viridis", files, ga, [*ga, "--cmap", "viridis"])
    r("--on crop -> original", files, ga, [*ga, "--on", "original"])
    r("--legend -> --no-legend", files, ga, [*ga, "--no-legend"])
    r(
        "--option head_fusion mean -> max",
        files,
        ["--method", "rollout"],
        ["--method", "rollout", "--option", "head_fusion=max"],
    )
    r("--batch-size 8 -> 1", files, ga, [*ga, "--batch-size", "1"])
    r("model weights changed", files, ga, ga, model="timm", model2="timm_seed1")
    r("model timm -> hf", files, ga, ga, model="timm", model2="hf")
    r(
        "--direction changed",
        files,
        ["--method", "lrp", "--direction", s.root / "dir192.npy"],
        ["--method", "lrp", "--direction", s.root / "dir192_b.npy"],
        model="headless",
    )
    d = ["--method", "lrp", "--direction", s.root / "dir192.npy"]
    r(
        "--readout cls -> patch_mean",
        files,
        [*d, "--readout", "cls"],
        [*d, "--readout", "patch_mean"],
        model="tokens",
    )
    r(
        "--readout patch_mean -> cls_and_patch_mean (384-d)",
        files,
        [*d, "--readout", "patch_mean"],
        ["--method", "lrp", "--direction", s.root / "dir384.npy", "--readout", "cls_and_patch_mean"],
        model="tokens",
    )
    r(
        "--direction -> none (attention)",
        files,
        ["--method", "attention", "--direction", s.root / "dir192.npy"],
        ["--method", "attention"],
        model="headless",
    )

    def replace_image(folder: Path) -> None:
        Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(s.root / "replaced" / "img0.png")

    moving = s.root / "replaced"
    shutil.copytree(im["plain"], moving)
    r("an input replaced by other pixels", [moving / "img0.png"], ga, ga, between=replace_image)
    two = s.root / "grows"
    two.mkdir()
    shutil.copy(im["plain"] / "img0.png", two / "a.png")

    def add_jpg(folder: Path) -> None:
        Image.open(im["plain"] / "img1.png").save(two / "a.jpg")

    r("a.jpg added beside a.png", [two], ga, ga, between=add_jpg)
    shrink = s.root / "shrinks"
    shutil.copytree(im["plain"], shrink)
    r("an input removed", [shrink], ga, ga, between=lambda folder: (shrink / "img2.png").unlink())

    def interrupted(folder: Path) -> None:
        """What a killed run leaves: temporaries of a dead writer, a dead run's lock, a map cut short."""
        from attnmap.io_utils import temporary_name

        dead = 2**22 + 12345
        for target in ("img0_grad_rollout.png", "img0_grad_rollout.npy"):
            tmp = temporary_name(folder / target)
            tmp = tmp.with_name(tmp.name.replace(f"-{os.getpid()}-", f"-{dead}-"))
            tmp.write_bytes(b"partial")
        (folder / ".attnmap.lock").write_text(
            json.dumps({"pid": dead, "host": os.uname().nodename, "started": 0, "command": "attnmap explain"})
        )
        npy = folder / "img1_grad_rollout.npy"
        npy.write_bytes(npy.read_bytes()[:-8])
        (folder / "img0_grad_rollout.npy").unlink()  # its picture and record stay

    r("leftovers of an interrupted run", files, ga, ga, between=interrupted)
    rows = np.random.default_rng(5).normal(size=(2, 192))
    np.save(s.root / "rows_a.npy", rows)
    rows[1] *= -1
    np.save(s.root / "rows_b.npy", rows)
    r(
        "--direction rows, the second row changed",
        files,
        ["--method", "lrp", "--direction", s.root / "rows_a.npy"],
        ["--method", "lrp", "--direction", s.root / "rows_b.npy"],
        model="headless",
    )
    renamed = s.root / "renames"
    shutil.copytree(im["plain"], renamed)
    r(
        "an input renamed",
        [renamed],
        ga,
        ga,
        between=lambda f: (renamed / "img0.png").rename(renamed / "zz.png"),
    )
    r(
        "--method all twice, --cmap changed",
        files,
        ["--method", "all"],
        ["--method", "all", "--cmap", "viridis"],
    )
    r(
        "--workers 1: single -> all, --target changed",
        files,
        [*ga, "--target", "0"],
        ["--method", "all", "--target", "1", "--workers", "1"],
    )
    r("--workers 1: leftovers of an interrupted run", files, ga, [*ga, "--workers", "1"], between=interrupted)


SECTIONS = {
    "api": api_cases,
    "explain": option_cases,
    "inputs": input_cases,
    "reruns": rerun_cases,
    "evaluate": evaluate_cases,
}
