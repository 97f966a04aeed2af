"""The explain_cli_sweep's `attnmap explain` option cases: every option of `attnmap explain --help` at
boundary and wrong values (see explain_cli_sweep.py)."""

from __future__ import annotations

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
