"""The README is run, not trusted: every fenced ``attnmap ...`` command line and the evaluation table.

`test_every_readme_command_runs` extracts each ``attnmap`` line from README.md's ``bash`` blocks and
runs it, in order, in a scratch folder. Where the README names a user's file, the test puts a tiny
stand-in under that name (`USER_FILES`); where it asks for hours of work, `SHRINK` scales the
workload down (fewer images, epochs, folds, workers) without changing any option's spelling. A
command line whose options drift from the CLI fails here.

`test_readme_evaluation_table` reruns the command printed above the README's evaluation table and
compares its rows with the README's (tolerance `TABLE_TOLERANCE`): by default for the fastest
method (attention) and the random baseline, every method with ``make evidence``
(``ATTNMAP_EVIDENCE_FULL=1``).
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnmap.cli.main import main

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
WEIGHTS = ROOT / "src" / "attnmap" / "data" / "weights"
TABLE_TOLERANCE = 0.05
"""Absolute, on the table's ×100 scale. The numbers are identical run to run on one machine; across
CPUs float32 reductions may differ in the last bits, which can flip perturbation order on ties."""


def readme_commands(text: str) -> list[str]:
    """The ``attnmap ...`` command lines of the ``bash`` blocks (continuations joined)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("attnmap "):
                commands.append(line.strip())
    return commands


def _run(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as done:
        return int(done.code or 0) if not isinstance(done.code, str) else 1
    return 0


# --------------------------------------------------------------------- stand-ins for user files
def _shape_images(folder: Path, n: int, seed: int) -> list[Path]:
    from attnmap.data.shapes import make_shapes

    folder.mkdir(parents=True, exist_ok=True)
    images = make_shapes(n, seed=seed)[0]
    paths = []
    for index, image in enumerate(images):
        path = folder / f"shape_{index}.png"
        Image.fromarray(np.asarray(image)).save(path)
        paths.append(path)
    return paths


def _vit_checkpoint(path: Path) -> Path:
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=64, num_classes=5)
    torch.save({"state_dict": model.state_dict()}, path)
    return path


def _feature_bags(root: Path, n: int = 8) -> tuple[Path, Path]:
    """CLAM-layout 64-d bags (the bundled demo CLAM's width) and a labels CSV; class 1 is shifted."""
    from attnmap.wsi.features import save_features

    rng = np.random.default_rng(0)
    rows = ["slide_id,label"]
    for index in range(n):
        label = index % 2
        features = rng.normal(label * 0.5, 1.0, size=(12, 64)).astype(np.float32)
        coords = np.stack(np.meshgrid(np.arange(4), np.arange(3)), -1).reshape(-1, 2) * 256
        save_features(root / "h5_files" / f"bag_{index}.h5", features, coords)
        rows.append(f"bag_{index},{label}")
    labels = root.parent / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return root, labels


def _slide(path: Path) -> Path:
    from attnmap.data.synthetic_slides import make_slide

    return Path(make_slide(path, seed=3, size=(1536, 1536), n_levels=3).path)


def _pipeline_config(root: Path) -> Path:
    from synthetic_slide_files import write_pipeline_setup

    return write_pipeline_setup(root, n_slides=1)


USER_FILES: dict[str, Callable[[Path], list[str]]] = {
    # README token -> what stands in for it (built under the scratch folder)
    "cat.png": lambda tmp: [str(_shape_images(tmp / "cat", 1, seed=5)[0])],
    "photos/": lambda tmp: [str(_shape_images(tmp / "photos", 3, seed=6)[0].parent)],
    "vit.pth": lambda tmp: [str(_vit_checkpoint(tmp / "vit.pth"))],
    # a 224-px ViT-Base explaining with every method is minutes of CPU: the same family, tiny
    "timm:vit_base_patch16_224": lambda tmp: [
        "timm:vit_tiny_patch16_224", "--model-arg", "depth=1", "--model-arg", "img_size=64"
    ],
    "features/": lambda tmp: [str(_feature_bags(tmp / "features")[0])],
    "labels.csv": lambda tmp: [str(tmp / "labels.csv")],
    "features/h5_files": lambda tmp: [str(_feature_bags(tmp / "features")[0] / "h5_files")],
    "features/h5_files/*.h5": lambda tmp: sorted(glob.glob(str(tmp / "features" / "h5_files" / "*.h5"))),
    "s_0_checkpoint.pt": lambda tmp: [str(WEIGHTS / "demo_clam_sb.pt")],  # takes 64-d features
    "slide.svs": lambda tmp: [str(_slide(tmp / "slide.tif"))],
    "resnet50_trunc": lambda tmp: ["attnmap:tiny"],  # the bundled encoder, 64-d like the demo CLAM
    "config.yaml": lambda tmp: [str(_pipeline_config(tmp / "wsi"))],
    # what the README's `mil attention` line wrote for one bag (its scores_<method> sets)
    "scores/slide_attention.h5": lambda tmp: [str(tmp / "scores" / "bag_0_attention.h5")],
    # the `wsi run` output folder of config.yaml (its run.output_dir) and one of its slides' scores
    "attnmap_results/": lambda tmp: [str(tmp / "wsi" / "out")],
    "attnmap_results/heatmaps/slide/slide_blockmap.h5": lambda tmp: [
        str(tmp / "wsi" / "out" / "heatmaps" / "slide_0" / "slide_0_blockmap.h5")
    ],
}
SHRINK: dict[str, dict[str, str]] = {
    # command -> {option: smaller value}; options the README line lacks are appended
    "evaluate": {"--n": "4"},
    "train-shapes": {"--epochs": "1", "--n-train": "64"},  # n-train >= its batch size
    "mil train": {"--folds": "2", "--max-epochs": "2"},
    "demo": {"--n-eval": "10"},
    "explain": {"--workers": "1"},
    "wsi run": {"--workers": "1"},
}


def _shrink(args: list[str]) -> list[str]:
    command = " ".join(args[:2]) if args[0] in ("mil", "wsi") else args[0]
    args = list(args)
    slides = any(flag in args for flag in ("--mil-checkpoint", "--bags", "--run"))
    for option, value in SHRINK.get(command, {}).items():
        if option in args:
            args[args.index(option) + 1] = value
        elif command == "evaluate" and slides:  # --n is an image evaluation's (refused with bags)
            continue
        elif command != "explain":  # explain runs in process unless the README asks for workers
            args += [option, value]
    return args


def _substitute(args: list[str], tmp: Path, made: dict[str, list[str]]) -> list[str]:
    out: list[str] = []
    for token in args:
        if token in USER_FILES:
            if token not in made:
                made[token] = USER_FILES[token](tmp)
            out.extend(made[token])
        else:
            out.append(token)
    return out


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path: Path, monkeypatch, single_thread) -> None:
    commands = readme_commands(README.read_text())
    assert len(commands) >= 10, commands
    monkeypatch.chdir(tmp_path)
    made: dict[str, list[str]] = {}
    failures = []
    for line in commands:
        args = shlex.split(line, comments=True)[1:]
        args = _shrink(_substitute(args, tmp_path, made))
        code = _run(args)
        if code != 0:
            failures.append(f"exit {code}: {line}")
    assert not failures, "\n".join(failures)
    assert (WEIGHTS / "shapes_vit.safetensors").stat().st_size > 0  # train-shapes wrote elsewhere
    assert (tmp_path / "shapes-vit" / "shapes_vit.safetensors").is_file()
    demo = tmp_path / "attnmap-demo"
    promised = ["evaluation.csv", "evaluation.png", "slide_heatmap.png", "slide_heatmap.tif",
                "slide_blockmap.h5", "hard_methods.png", "hard_fine_gallery.png", "hard_slide_fine.tif",
                "shapes_methods.png"]
    assert [name for name in promised if not (demo / name).is_file()] == []  # what README says demo writes
    page = (tmp_path / "attnmap-demo" / "index.html").read_text()
    assert "darkness baseline" in page  # the demo's MIL AUC is shown with its baseline
    assert json.loads((tmp_path / "attnmap-demo" / "demo_run.json").read_text())["wall_seconds"] > 0


# --------------------------------------------------------------------- the docs pages' commands
DOC_PAGES = ("mil-relevance.md", "viewer.md")


def runnable_doc_commands(text: str) -> list[list[str]]:
    """The ``attnmap`` lines of a page's ``bash`` blocks that run as written and end on their own:
    not those with placeholders (``<id>``, ``[--option]``), not a viewer serving until Ctrl+C."""
    commands = []
    for line in readme_commands(text):
        args = shlex.split(line, comments=True)[1:]
        if any("<" in arg or arg.startswith("[") for arg in args):
            continue
        if args[0] == "view" and "--export" not in args:
            continue
        commands.append(args)
    return commands


@pytest.mark.slow
def test_every_runnable_docs_command_runs(tmp_path: Path, monkeypatch, single_thread) -> None:
    """docs/*.md command lines (MIL relevance, the viewer's static export) run as printed."""
    monkeypatch.chdir(tmp_path)
    made: dict[str, list[str]] = {}
    assert _run(["--quiet", "wsi", "run", str(_pipeline_config(tmp_path / "wsi"))]) == 0  # attnmap_results/
    ran = []
    for page in DOC_PAGES:
        for args in runnable_doc_commands((ROOT / "docs" / page).read_text()):
            code = _run(["--quiet", *_substitute(args, tmp_path, made)])
            assert code == 0, f"exit {code}: docs/{page}: attnmap {' '.join(args)}"
            ran.append(" ".join(args[:2]))
    assert ran.count("mil attention") == 1 and ran.count("evaluate --mil-checkpoint") == 1, ran
    assert "view attnmap_results/" in ran, ran
    import h5py

    with h5py.File(tmp_path / "out" / "bag_0_attention.h5") as scores:  # --method all
        assert {"scores_lrp", "scores_occlusion", "scores_integrated_gradients"} <= set(scores)
    assert (tmp_path / "eval" / "patch_flipping.csv").is_file()
    assert (tmp_path / "site" / "index.html").is_file()


# --------------------------------------------------------------------- the evaluation table
def _table_rows(markdown: str) -> dict[str, list[float]]:
    rows = {}
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) > 2 and cells[0] and not cells[0].startswith(("method", "---")):
            try:
                rows[cells[0]] = [float(cell) for cell in cells[1:]]
            except ValueError:
                continue
    return rows


def _evidence_section(text: str) -> tuple[str, str]:
    section = text.split("## Evidence", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]  # its first part
    command = next(line for line in readme_commands(section) if "--markdown" in line)
    return command, section


@pytest.mark.slow
def test_readme_evaluation_table(capsys, single_thread, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the command writes its CSV and plot into ./attnmap_evaluation
    command, section = _evidence_section(README.read_text())
    expected = _table_rows(section)
    assert "random" in expected and len(expected) >= 3
    args = shlex.split(command, comments=True)[1:]
    full = os.environ.get("ATTNMAP_EVIDENCE_FULL") == "1"
    methods = sorted(expected) if full else ["attention", "random"]
    args[args.index("--methods") + 1] = ",".join(name for name in methods if name != "random")
    assert _run([*args, "--quiet"]) == 0
    produced = _table_rows(capsys.readouterr().out)
    for name in methods:
        assert name in produced, f"{name} missing from the regenerated table"
        difference = np.abs(np.array(produced[name]) - np.array(expected[name]))
        assert difference.max() <= TABLE_TOLERANCE, (name, produced[name], expected[name])


def test_docs_evaluation_table_is_the_readmes() -> None:
    """docs/evaluation.md repeats the README's table and command: they must not drift apart."""
    command, section = _evidence_section(README.read_text())
    docs = (ROOT / "docs" / "evaluation.md").read_text()
    assert command.split("#")[0].strip() in docs
    assert _table_rows(docs) == _table_rows(section)


@pytest.mark.slow
def test_readme_slide_evidence_table(capsys, single_thread) -> None:
    """The hard-slide evidence tables in README are what their printed command prints now."""
    from attnmap.evaluate.slide_evidence import main as slide_evidence

    text = README.read_text()
    section = text.split("### From slide decision to pixels", 1)[1].split("\n## ", 1)[0]
    command = re.search(r"python -m attnmap.evaluate.slide_evidence (.*)", section).group(1).split()
    slide_evidence(command)
    printed = capsys.readouterr().out

    def numbers(markdown: str) -> dict[str, list[float]]:
        rows = {}
        for line in markdown.splitlines():
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not line.startswith("|") or len(cells) != 3 or cells[1].startswith(("---", "patch", "pixel")):
                continue
            rows[cells[0]] = [float(c) if c != "–" else float("nan") for c in cells[1:]]
        return rows

    expected, measured = numbers(section), numbers(printed)
    assert expected and set(expected) == set(measured)
    for name, values in expected.items():
        np.testing.assert_allclose(measured[name], values, atol=0.005, err_msg=name)
