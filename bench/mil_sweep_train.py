"""mil_sweep section: `attnmap mil train` with odd options, labels CSVs and bags, and its reruns."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import torch
from mil_sweep_harness import (
    RESULTS,
    D,
    StaleError,
    case,
    check,
    cli,
    cli_case,
    rng_features,
)

from attnmap.errors import InputError
from attnmap.mil import (
    load_mil,
    write_h5_bag,
)

# ---------------------------------------------------------------------------------------------- cli


def make_cohort(
    root: Path, n_slides: int = 8, n_patches: int = 12, seed: int = 0, ids: list[str] | None = None
) -> Path:
    rng = np.random.default_rng(seed)
    rows = []
    ids = ids or [f"s{i:02d}" for i in range(n_slides)]
    for i, slide in enumerate(ids):
        label = i % 2
        features = rng.normal(size=(n_patches, D)).astype(np.float32)
        if label:
            features[:4, :4] += 3.0
        write_h5_bag(
            root / "h5_files" / f"{slide}.h5",
            features,
            np.stack([np.arange(n_patches) * 256, np.zeros(n_patches)], 1),
        )
        rows.append((slide, "tumour" if label else "normal", f"case_{i:02d}"))
    write_labels(root / "labels.csv", rows)
    return root / "labels.csv"


def write_labels(path: Path, rows: list[tuple]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slide_id", "label", "case_id"][: len(rows[0]) if rows else 3])
        writer.writerows(rows)
    return path


def folder_snapshot(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, object]:
    """Numbers of every h5 dataset and CSV under a folder (provenance/time columns left out)."""
    snapshot: dict[str, object] = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if any(part in rel for part in skip):
            continue
        if path.suffix == ".h5":
            with h5py.File(path, "r") as handle:
                handle.visititems(
                    lambda name, obj, rel=rel: snapshot.__setitem__(
                        f"{rel}:{name}", obj[()].tolist() if isinstance(obj, h5py.Dataset) else None
                    )
                )
        elif path.suffix == ".csv":
            snapshot[rel] = path.read_text().splitlines()[:50]
    return snapshot


def sweep_cli_train(tmp: Path, root: Path, labels: Path, bag: Path) -> None:
    # ---- train
    fast = [
        "--folds",
        "2",
        "--max-epochs",
        "2",
        "--k-sample",
        "2",
        "--seed",
        "3",
        "--quiet",
        "--dropout",
        "0",
    ]
    cli_case("cli", "train tiny cohort", ["mil", "train", root, labels, "-o", tmp / "tr_ok", *fast])
    cli_case(
        "cli",
        "train abmil",
        ["mil", "train", root, labels, "-o", tmp / "tr_abmil", "--model", "abmil", *fast],
    )
    cli_case(
        "cli",
        "train clam_mb --subtyping --size big --no-gate",
        [
            "mil",
            "train",
            root,
            labels,
            "-o",
            tmp / "tr_mb",
            "--model",
            "clam_mb",
            "--subtyping",
            "--size",
            "big",
            "--no-gate",
            *fast,
        ],
    )
    cli_case(
        "cli",
        "train --folds 20 (more than slides)",
        ["mil", "train", root, labels, "-o", tmp / "tr_k", *fast, "--folds", "20"],
        "error",
    )
    cli_case(
        "cli",
        "train --weighted-sample --no-early-stopping",
        ["mil", "train", root, labels, "-o", tmp / "tr_w", *fast, "--weighted-sample", "--no-early-stopping"],
    )
    tiny = tmp / "tiny"
    tiny_labels = make_cohort(tiny, n_slides=4)
    cli_case(
        "cli",
        "train 4 slides, 2 folds",
        ["mil", "train", tiny, tiny_labels, "-o", tmp / "tr_tiny", *fast],
        "any",
    )
    cli_case(
        "cli",
        "train --val-fraction 0.9",
        ["mil", "train", root, labels, "-o", tmp / "tr_val", *fast, "--val-fraction", "0.9"],
        "any",
    )
    rows = list(csv.reader(labels.read_text(encoding="utf-8").splitlines()))[1:]
    unknown = write_labels(tmp / "unknown.csv", [*rows, ("ghost", "tumour", "case_99")])
    cli_case(
        "cli",
        "train labels with an unknown slide",
        ["mil", "train", root, unknown, "-o", tmp / "tr_unk", *fast],
        "error",
    )
    dup = write_labels(tmp / "dup.csv", [*rows, rows[0]])
    cli_case(
        "cli",
        "train labels with a duplicated id",
        ["mil", "train", root, dup, "-o", tmp / "tr_dup", *fast],
        "error",
    )
    conflict = write_labels(
        tmp / "conflict.csv",
        [*rows, (rows[0][0], "tumour" if rows[0][1] == "normal" else "normal", rows[0][2])],
    )
    cli_case(
        "cli",
        "train labels with one id labelled twice differently",
        ["mil", "train", root, conflict, "-o", tmp / "tr_conf", *fast],
        "error",
    )
    single = write_labels(tmp / "single.csv", [(r[0], "tumour", r[2]) for r in rows])
    cli_case(
        "cli",
        "train labels with one class only",
        ["mil", "train", root, single, "-o", tmp / "tr_single", *fast],
        "error",
    )
    uni = tmp / "uni"
    uni_labels = make_cohort(uni, ids=["schnitt_ä", "切片_1", "slide é 2", "Ω-3", "s_4", "s_5", "ß6", "s7"])
    cli_case("cli", "train non-ASCII ids", ["mil", "train", uni, uni_labels, "-o", tmp / "tr_uni", *fast])
    missing = tmp / "missing"
    shutil.copytree(root, missing)
    (missing / "h5_files" / "s03.h5").unlink()
    cli_case(
        "cli",
        "train a missing feature file",
        ["mil", "train", missing, missing / "labels.csv", "-o", tmp / "tr_miss", *fast],
        "error",
    )
    empty_labels = write_labels(tmp / "empty.csv", [])
    cli_case(
        "cli",
        "train an empty labels CSV",
        ["mil", "train", root, empty_labels, "-o", tmp / "tr_empty", *fast],
        "error",
    )
    (tmp / "nohead.csv").write_text("s00,normal\ns01,tumour\n")
    cli_case(
        "cli",
        "train a labels CSV without a header",
        ["mil", "train", root, tmp / "nohead.csv", "-o", tmp / "tr_nohead", *fast],
        "error",
    )
    bom = tmp / "bom.csv"
    bom.write_text("\ufeff" + labels.read_text(encoding="utf-8"), encoding="utf-8")
    cli_case("cli", "train a labels CSV with a BOM", ["mil", "train", root, bom, "-o", tmp / "tr_bom", *fast])
    mixed = tmp / "mixed"
    shutil.copytree(root, mixed)
    write_h5_bag(mixed / "h5_files" / "s02.h5", rng_features(12, D + 1), np.zeros((12, 2)))
    cli_case(
        "cli",
        "train bags of two widths",
        ["mil", "train", mixed, mixed / "labels.csv", "-o", tmp / "tr_mixed", *fast],
        "error",
    )

    def rerun_train(change: Callable[[Path], None], what: str) -> None:
        def run() -> None:
            work = tmp / f"trerun_{what}"
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(root, work / "data")
            lab = work / "data" / "labels.csv"
            code, _, err = cli("mil", "train", work / "data", lab, "-o", work / "out", *fast)
            check(code == 0, err)
            change(work / "data")
            code, _, err = cli("mil", "train", work / "data", lab, "-o", work / "out", *fast)
            if code == 2:  # refusing to mix is fine, if said in one line
                raise InputError(err.strip().splitlines()[-1])
            check(code == 0, err)
            code, _, err = cli("mil", "train", work / "data", lab, "-o", work / "fresh", *fast)
            check(code == 0, err)
            a = folder_snapshot(work / "out", skip=("log", "state", ".json"))
            b = folder_snapshot(work / "fresh", skip=("log", "state", ".json"))
            if {k: v for k, v in a.items()} != b:
                diff = [k for k in set(a) | set(b) if a.get(k) != b.get(k)]
                raise StaleError(
                    f"rerun after changing the {what} differs from a fresh run: {sorted(diff)[:4]}"
                )
            for fold in sorted((work / "out").glob("fold_*/checkpoint.pt")):
                fresh = work / "fresh" / fold.parent.name / "checkpoint.pt"
                sa, sb = torch.load(fold, weights_only=True), torch.load(fresh, weights_only=True)
                sa = sa.get("model", sa) if isinstance(sa, dict) else sa
                sb = sb.get("model", sb) if isinstance(sb, dict) else sb
                if any(not torch.equal(sa[k], sb[k]) for k in sb if isinstance(sb[k], torch.Tensor)):
                    raise StaleError(f"{fold.parent.name} checkpoint differs from a fresh run's")

        case("cli", f"train rerun after changing the {what}", run, "any")

    def change_bag(data: Path) -> None:
        write_h5_bag(data / "h5_files" / "s02.h5", rng_features(12, seed=11), np.zeros((12, 2)))

    def change_label(data: Path) -> None:
        lab = data / "labels.csv"
        rows = list(csv.reader(lab.read_text(encoding="utf-8").splitlines()))
        rows[1][1], rows[2][1] = rows[2][1], rows[1][1]
        write_labels(lab, [tuple(r) for r in rows[1:]])

    rerun_train(change_bag, "bag")
    sweep_train_inputs(tmp, root, labels, fast)
    rerun_train(change_label, "labels")

    def drop_slide(data: Path) -> None:
        lab = data / "labels.csv"
        rows = list(csv.reader(lab.read_text(encoding="utf-8").splitlines()))
        write_labels(lab, [tuple(r) for r in rows[1:-2]])

    rerun_train(drop_slide, "slide list (two fewer)")

    def trained_checkpoint() -> None:
        for fold in sorted((tmp / "tr_ok").glob("fold_*/checkpoint.pt")):
            code, _, err = cli(
                "mil", "attention", fold, bag, "-o", tmp / "att_trained", "--method", "all", "--quiet"
            )
            check(code == 0, err)
            loaded = load_mil(fold)
            check(loaded.embed_dim == D and loaded.n_classes == 2, "trained checkpoint misread")

    case("cli", "attention with a checkpoint `mil train` wrote", trained_checkpoint)
    cli_case(
        "cli",
        "train rerun with another --max-epochs",
        ["mil", "train", root, labels, "-o", tmp / "tr_ok", *fast[:2], "--max-epochs", "3", *fast[4:]],
        "any",
    )


def sweep_train_inputs(tmp: Path, root: Path, labels: Path, fast: list[str]) -> None:
    """`mil train` on labels CSVs and bags written in the ways people write them."""
    rows = list(csv.reader(labels.read_text(encoding="utf-8").splitlines()))

    def variant(name: str, text: str, expect: str = "ok", extra: tuple[str, ...] = ()) -> None:
        path = tmp / f"labels_{len(RESULTS)}.csv"
        path.write_bytes(text.encode("utf-8"))
        cli_case(
            "cli",
            f"train labels {name}",
            ["mil", "train", root, path, "-o", tmp / f"tv_{len(RESULTS)}", *fast, *extra],
            expect,
        )

    body = "\n".join(",".join(r) for r in rows) + "\n"
    variant("with CRLF line endings", body.replace("\n", "\r\n"))
    variant("with spaces around cells", "\n".join(", ".join(r) for r in rows) + "\n")
    variant(
        "as integers 0/1",
        "\n".join(
            ",".join(r) if i == 0 else f"{r[0]},{int(r[1] == 'tumour')},{r[2]}" for i, r in enumerate(rows)
        )
        + "\n",
    )
    variant(
        "with an extra column",
        "\n".join(",".join([*r, "x" if i else "notes"]) for i, r in enumerate(rows)) + "\n",
    )
    variant("without case_id", "\n".join(",".join(r[:2]) for r in rows) + "\n")
    variant(
        "with empty case ids",
        "\n".join(",".join(r if i == 0 else [r[0], r[1], ""]) for i, r in enumerate(rows)) + "\n",
        "any",
    )
    variant("with a blank line", body + "\n")
    variant("with an empty label", body + "s_x,,case_x\n", "error")
    variant("with columns in another order", "\n".join(",".join([r[1], r[0], r[2]]) for r in rows) + "\n")
    variant(
        "with 3 classes, one of 2 cases, 3 folds",
        body.replace("s07,tumour", "s07,other").replace("s06,normal", "s06,other"),
        "error",
        ("--folds", "3"),
    )
    # bags people write
    data = tmp / "odd_bags"
    shutil.copytree(root, data)
    write_h5_bag(data / "h5_files" / "s00.h5", rng_features(1, seed=20), np.zeros((1, 2)))
    with h5py.File(data / "h5_files" / "s01.h5", "w") as handle:
        handle["features"] = rng_features(12, seed=21).astype(np.float16)
        handle["coords"] = np.zeros((12, 2))
    (data / "h5_files" / "s02.h5").unlink()
    (data / "pt_files").mkdir()
    torch.save(
        {"features": torch.from_numpy(rng_features(12, seed=22)), "coords": torch.zeros(12, 2)},
        data / "pt_files" / "s02.pt",
    )
    cli_case(
        "cli",
        "train 1-patch, float16 and .pt dict bags",
        ["mil", "train", data, labels, "-o", tmp / "tr_odd", *fast, "--k-sample", "8"],
    )
    nan = tmp / "nan_bags"
    shutil.copytree(root, nan)
    bad = rng_features(12, seed=23)
    bad[3, 3] = np.nan
    write_h5_bag(nan / "h5_files" / "s04.h5", bad, np.zeros((12, 2)))
    cli_case(
        "cli", "train with a NaN bag", ["mil", "train", nan, labels, "-o", tmp / "tr_nan", *fast], "error"
    )
    empty = tmp / "empty_bags"
    shutil.copytree(root, empty)
    with h5py.File(empty / "h5_files" / "s05.h5", "w") as handle:
        handle["features"] = np.zeros((0, D), np.float32)
    cli_case(
        "cli",
        "train with an empty bag",
        ["mil", "train", empty, labels, "-o", tmp / "tr_emptybag", *fast],
        "error",
    )
    cli_case(
        "cli",
        "train rerun with another option (--lr)",
        ["mil", "train", root, labels, "-o", tmp / "tr_ok", *fast, "--lr", "1e-3"],
        "any",
    )
    cli_case("cli", "train --out is a file", ["mil", "train", root, labels, "-o", labels, *fast], "error")
