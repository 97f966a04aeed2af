"""mil_sweep section: `attnmap mil attention`, odd options and reruns (then `mil train`)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import torch
from mil_sweep_harness import (
    D,
    StaleError,
    case,
    check,
    cli,
    cli_case,
    perturbed,
    rng_features,
)

# ---------------------------------------------------------------------------------------------- cli
from mil_sweep_train import make_cohort, sweep_cli_train

from attnmap.mil import (
    CLAM_MB,
    write_h5_bag,
)


def sweep_cli(tmp: Path) -> None:
    root = tmp / "cli"
    labels = make_cohort(root)
    torch.manual_seed(4)
    model = perturbed(CLAM_MB(n_classes=2, embed_dim=D))
    ckpt = tmp / "cli_mb.pt"
    torch.save(model.state_dict(), ckpt)
    bag = root / "h5_files" / "s01.h5"
    out = tmp / "att"

    def attention_checks(folder: Path, names: tuple[str, ...] = ("s01",)) -> None:
        for name in names:
            with h5py.File(folder / f"{name}_attention.h5") as handle:
                keys = set(handle)
                for key in keys:
                    data = handle[key]
                    if isinstance(data, h5py.Dataset) and np.issubdtype(data.dtype, np.floating):
                        check(np.isfinite(data[()]).all(), f"{key} not finite")

    cli_case(
        "cli",
        "attention one bag",
        ["mil", "attention", ckpt, bag, "-o", out, "--quiet"],
        then=lambda: attention_checks(out),
    )
    cli_case(
        "cli",
        "attention --method all",
        ["mil", "attention", ckpt, bag, "-o", tmp / "att_all", "--method", "all", "--quiet"],
        then=lambda: attention_checks(tmp / "att_all"),
    )
    cli_case(
        "cli",
        "attention a folder of bags",
        ["mil", "attention", ckpt, root, "-o", tmp / "att_dir", "--quiet"],
    )
    cli_case(
        "cli",
        "attention --target 2 (2 classes)",
        ["mil", "attention", ckpt, bag, "-o", out, "--method", "lrp", "--target", "2"],
        "error",
    )
    cli_case(
        "cli", "attention --branch 5", ["mil", "attention", ckpt, bag, "-o", out, "--branch", "5"], "error"
    )
    cli_case(
        "cli",
        "attention --chunk-size 1 --method all",
        [
            "mil",
            "attention",
            ckpt,
            bag,
            "-o",
            tmp / "att_chunk",
            "--method",
            "all",
            "--chunk-size",
            "1",
            "--quiet",
        ],
        then=lambda: check(
            _same_h5(tmp / "att_all" / "s01_attention.h5", tmp / "att_chunk" / "s01_attention.h5", 1e-4),
            "--chunk-size 1 differs from the default",
        ),
    )
    one = write_h5_bag(tmp / "one.h5", rng_features(1), np.zeros((1, 2)))
    cli_case(
        "cli",
        "attention 1-patch bag --method all",
        ["mil", "attention", ckpt, one, "-o", tmp / "att_one", "--method", "all", "--quiet"],
    )
    cli_case(
        "cli",
        "attention 1-patch bag --method occlusion",
        ["mil", "attention", ckpt, one, "-o", tmp / "att_one2", "--method", "occlusion"],
        "error",
    )
    wide = write_h5_bag(tmp / "wide.h5", rng_features(4, D + 2), np.zeros((4, 2)))
    cli_case(
        "cli", "attention features of another width", ["mil", "attention", ckpt, wide, "-o", out], "error"
    )
    empty = tmp / "empty_ckpt.pt"
    empty.write_bytes(b"")
    cli_case("cli", "attention empty checkpoint", ["mil", "attention", empty, bag, "-o", out], "error")
    cli_case(
        "cli", "attention checkpoint is a directory", ["mil", "attention", root, bag, "-o", out], "error"
    )
    (tmp / "nobags").mkdir(exist_ok=True)
    cli_case(
        "cli", "attention folder without bags", ["mil", "attention", ckpt, tmp / "nobags", "-o", out], "error"
    )
    nan_bag = rng_features(4)
    nan_bag[0, 0] = np.nan
    nan_path = write_h5_bag(tmp / "nanbag.h5", nan_bag, np.zeros((4, 2)))
    cli_case("cli", "attention NaN bag", ["mil", "attention", ckpt, nan_path, "-o", out], "error")
    half = tmp / "half.pt"
    torch.save({k: v.half() for k, v in model.state_dict().items()}, half)
    cli_case(
        "cli",
        "attention float16 checkpoint --method all",
        ["mil", "attention", half, bag, "-o", tmp / "att_half", "--method", "all", "--quiet"],
        then=lambda: attention_checks(tmp / "att_half"),
    )
    uni = write_h5_bag(tmp / "schnitt ä 切片.h5", rng_features(5), np.zeros((5, 2)))
    cli_case(
        "cli",
        "attention non-ASCII bag name with spaces",
        ["mil", "attention", ckpt, uni, "-o", tmp / "att ü", "--method", "all", "--quiet"],
        then=lambda: check((tmp / "att ü" / "schnitt ä 切片_attention.csv").exists(), "no CSV"),
    )
    torch.save(
        {"features": torch.from_numpy(rng_features(6)), "coords": torch.zeros(6, 2)}, tmp / "dictbag.pt"
    )
    cli_case(
        "cli",
        "attention a .pt dict bag",
        ["mil", "attention", ckpt, tmp / "dictbag.pt", "-o", out, "--quiet"],
    )
    same_name = tmp / "other" / "h5_files"
    write_h5_bag(same_name / "s01.h5", rng_features(6, seed=9), np.zeros((6, 2)))
    cli_case(
        "cli",
        "attention two bags with one name",
        ["mil", "attention", ckpt, bag, same_name / "s01.h5", "-o", tmp / "att_twins", "--quiet"],
        then=lambda: check((tmp / "att_twins" / "s01_2_attention.h5").exists(), "second bag overwrote"),
    )

    # rerun after changing one input: must equal a fresh run
    def rerun_attention(
        change: Callable[[Path, Path], tuple[Path, Path]],
        what: str,
        first: tuple[str, ...] = ("--method", "lrp"),
        second: tuple[str, ...] = ("--method", "lrp"),
    ) -> None:
        def run() -> None:
            work = tmp / f"rerun_{what.replace(' ', '_')}"
            shutil.rmtree(work, ignore_errors=True)
            (work / "bags").mkdir(parents=True)
            b = write_h5_bag(work / "bags" / "s.h5", rng_features(9, seed=1), np.zeros((9, 2)))
            c = work / "m.pt"
            torch.save(model.state_dict(), c)
            code, _, err = cli("mil", "attention", c, b, "-o", work / "out", *first, "--quiet")
            check(code == 0, err)
            c2, b2 = change(c, b)
            code, _, err = cli("mil", "attention", c2, b2, "-o", work / "out", *second, "--quiet")
            check(code == 0, err)
            code, _, err = cli("mil", "attention", c2, b2, "-o", work / "fresh", *second, "--quiet")
            check(code == 0, err)
            if not _same_h5(
                work / "out" / "s_attention.h5", work / "fresh" / "s_attention.h5", 0, skip_attrs=True
            ):
                raise StaleError(f"rerun after changing the {what} differs from a fresh run")
            listing = sorted(p.name for p in (work / "out").iterdir())
            fresh = sorted(p.name for p in (work / "fresh").iterdir())
            if listing != fresh:
                raise StaleError(f"rerun leaves {listing}, a fresh run {fresh}")
            for name in fresh:
                if name.endswith(".csv"):
                    a = (work / "out" / name).read_text().splitlines()
                    b_ = (work / "fresh" / name).read_text().splitlines()
                    if [r for r in a if not r.startswith("#")] != [r for r in b_ if not r.startswith("#")]:
                        raise StaleError(f"{name} differs from a fresh run's")

        case("cli", f"attention rerun after changing the {what}", run)

    def unchanged(c: Path, b: Path) -> tuple[Path, Path]:
        return c, b

    def new_bag(c: Path, b: Path) -> tuple[Path, Path]:
        write_h5_bag(b, rng_features(9, seed=2), np.zeros((9, 2)))
        return c, b

    def new_model(c: Path, b: Path) -> tuple[Path, Path]:
        torch.manual_seed(7)
        torch.save(perturbed(CLAM_MB(n_classes=2, embed_dim=D), 7).state_dict(), c)
        return c, b

    def fewer_patches(c: Path, b: Path) -> tuple[Path, Path]:
        write_h5_bag(b, rng_features(5, seed=3), np.zeros((5, 2)))
        return c, b

    rerun_attention(new_bag, "bag")
    rerun_attention(new_model, "checkpoint")
    rerun_attention(fewer_patches, "bag size")
    rerun_attention(unchanged, "method (all -> lrp)", ("--method", "all"), ("--method", "lrp"))
    rerun_attention(
        unchanged, "target", ("--method", "lrp", "--target", "0"), ("--method", "lrp", "--target", "1")
    )
    rerun_attention(
        unchanged, "csv option (csv -> --no-csv)", ("--method", "lrp"), ("--method", "lrp", "--no-csv")
    )
    rerun_attention(unchanged, "branch", ("--branch", "0"), ("--branch", "1"))

    sweep_cli_train(tmp, root, labels, bag)


def _same_h5(a: Path, b: Path, atol: float, skip_attrs: bool = True) -> bool:
    with h5py.File(a) as ha, h5py.File(b) as hb:
        if set(ha) != set(hb):
            return False
        for key in ha:
            if not isinstance(ha[key], h5py.Dataset):
                continue
            x, y = ha[key][()], hb[key][()]
            if getattr(x, "shape", None) != getattr(y, "shape", None):
                return False
            if np.issubdtype(np.asarray(x).dtype, np.floating):
                if not np.allclose(x, y, atol=atol, rtol=max(atol, 0), equal_nan=True):
                    return False
            elif not np.array_equal(x, y):
                return False
        if not skip_attrs:
            return dict(ha.attrs) == dict(hb.attrs)
        for name in ("target", "prediction", "n_patches"):
            if name in ha.attrs and not np.array_equal(ha.attrs[name], hb.attrs.get(name)):
                return False
    return True
