"""The explain_cli_sweep's rerun cases: a finished run rerun into its folder with one option changed,
compared with a fresh run (see explain_cli_sweep.py)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image


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
