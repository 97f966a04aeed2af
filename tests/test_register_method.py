"""A user-registered method reaches `attnmap.explain`, the CLI (`methods`, `explain`, `evaluate`)
and `attnmap.evaluate`, in process and, through the ``attnmap.methods`` entry point, in a fresh one."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import attnmap
from attnmap.cli.main import main
from attnmap.data.shapes import ShapesDataset
from attnmap.errors import InputError
from attnmap.evaluate.runner import METRICS, evaluate_methods

NAME = "input_saliency"


def input_saliency(model, images, target, *, absolute: bool = True) -> torch.Tensor:
    """Gradient of the target logit with respect to the pixels, summed over colour channels."""
    images = images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(images)
        classes = attnmap.resolve_target(target, logits)
        logits.gather(1, classes[:, None]).sum().backward()
    grad = images.grad.sum(dim=1)
    return grad.abs() if absolute else grad


@pytest.fixture
def user_method():
    attnmap.register_method(NAME, input_saliency, needs_grad=True, output="pixels")
    yield NAME
    attnmap.unregister_method(NAME)


def run_cli(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as done:
        return int(done.code or 0)
    return 0


def test_registration_checks_and_description(user_method):
    description = "Gradient of the target logit with respect to the pixels, summed over colour channels."
    assert attnmap.methods()[NAME] == description  # the docstring's first line by default
    with pytest.raises(attnmap.InputError, match="already registered"):
        attnmap.register_method(NAME, lambda model, images, target: images)
    with pytest.raises(attnmap.InputError, match=r"must take \(model, images, target"):
        attnmap.register_method("bad", lambda images: images)
    assert "bad" not in attnmap.methods()


def test_user_method_in_explain_cli_and_evaluate(user_method, tmp_path, capsys, single_thread):
    model = attnmap.load_model("attnmap:shapes-vit")
    data = ShapesDataset(4, seed=3)
    maps = attnmap.explain(model, data.images, NAME, absolute=False)
    assert maps.shape == (4, 64, 64) and (maps < 0).any()
    with pytest.raises(attnmap.InputError, match="has no option nope; its options: absolute=True"):
        attnmap.explain(model, data.images, NAME, nope=1)

    assert run_cli(["methods"]) == 0
    assert f"{NAME} " in capsys.readouterr().out

    picture = tmp_path / "shape.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(picture)
    out = tmp_path / "maps"
    args = ["explain", str(picture), "--model", "attnmap:shapes-vit", "--method", NAME, "--out", str(out)]
    assert run_cli([*args, "--option", "absolute=True"]) == 0
    assert np.load(out / f"shape_{NAME}.npy").shape == (64, 64)

    result = evaluate_methods(model, data, [NAME, "attention"], batch_size=4, progress=False)
    assert [row["method"] for row in result.rows] == [NAME, "attention", "random"]
    assert result.row(NAME)["note"] == "" and all(np.isfinite(float(result.row(NAME)[k])) for k in METRICS)

    assert run_cli(["evaluate", "--model", "attnmap:shapes-vit", "--data", "shapes", "--n", "4",
                    "--methods", NAME, "--out", str(tmp_path / "eval"), "--quiet"]) == 0
    rows = list(csv.DictReader((tmp_path / "eval" / "evaluation.csv").open()))
    assert [row["method"] for row in rows] == [NAME, "random"]


def test_entry_point_plugin_reaches_a_fresh_cli_process(tmp_path: Path):
    """An installed package declares ``[project.entry-points."attnmap.methods"]``; here a minimal
    dist-info on the path stands for the installed package."""
    (tmp_path / "my_attnmap_plugin.py").write_text(
        "import torch, attnmap\n\n"
        "@attnmap.register_method('centre_prior', description='A centred Gaussian (a plugin test).')\n"
        "def centre_prior(model, images, target, *, width: float = 0.3):\n"
        "    b, _, h, w = images.shape\n"
        "    y, x = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing='ij')\n"
        "    return torch.exp(-(x**2 + y**2) / width).expand(b, h, w)\n"
    )
    info = tmp_path / "my_attnmap_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-attnmap-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[attnmap.methods]\ncentre_prior = my_attnmap_plugin\n")
    src = Path(attnmap.__file__).parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "attnmap", "methods"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": f"{tmp_path}:{src}", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert "centre_prior" in done.stdout and "width=0.3" in done.stdout


def test_registry_is_a_leaf_module():
    """The registry stores only; nothing it imports leads back to the method modules."""
    import ast

    import attnmap.vit.registry as registry
    import attnmap.vit.targets as targets

    def attnmap_imports(module) -> set[str]:
        tree = ast.parse(Path(module.__file__).read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
        return {name for name in imported if name and name.startswith("attnmap")}

    # the registry's one other import, the target types, is itself a leaf
    assert attnmap_imports(registry) == {"attnmap.errors", "attnmap.vit.targets"}
    assert attnmap_imports(targets) == {"attnmap.errors"}


def test_resolve_target_refuses_what_is_not_a_class_of_logits():
    """A user method's helper: token outputs, directions and float 'indices' are errors, not casts."""
    logits = torch.randn(2, 5)
    assert attnmap.resolve_target(None, logits).tolist() == logits.argmax(1).tolist()
    assert attnmap.resolve_target([1, 4], logits).tolist() == [1, 4]
    with pytest.raises(InputError, match=r"needs \(B, classes\) logits, got \(2, 17, 5\)"):
        attnmap.resolve_target(None, torch.randn(2, 17, 5))
    with pytest.raises(InputError, match="target is a direction"):
        attnmap.resolve_target(torch.randn(5), logits)
    with pytest.raises(InputError, match="target must be an int"):
        attnmap.resolve_target(1.5, logits)
    with pytest.raises(InputError, match="out of range"):
        attnmap.resolve_target(5, logits)


@pytest.mark.parametrize(
    ("output", "returned", "message"),
    [
        ("patches", lambda images: images[:, 0].numpy(), r"returned a ndarray, not a tensor"),
        ("patches", lambda images: None, r"returned a NoneType, not a tensor"),
        ("patches", lambda images: images[:1, 0, :4, :4], r"returned \(1, 4, 4\) for 2 images"),
        ("patches", lambda images: images[:, 0, 0, :4], r"returned \(2, 4\) for 2 images"),
        ("pixels", lambda images: images[:, 0, :4, :4], r"returned \(2, 4, 4\) for 2 images of 32×32"),
    ],
)
def test_a_user_method_returning_the_wrong_maps_is_named_in_one_line(output, returned, message) -> None:
    """What a registered method returned was passed on unchecked: a numpy array or None failed
    with an AttributeError, and maps for another batch size or of another shape came back as if
    they were the images' maps (the CLI then drew them on the wrong images)."""
    import timm

    model = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=1, num_classes=3).eval()
    attnmap.register_method("wrong_maps", lambda model, images, target: returned(images), output=output)
    try:
        with pytest.raises(InputError, match=rf"^method 'wrong_maps' \(output={output!r}\) {message}"):
            attnmap.explain(model, torch.rand(2, 3, 32, 32), "wrong_maps")
    finally:
        attnmap.unregister_method("wrong_maps")
