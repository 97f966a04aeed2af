"""`attnmap evaluate` and the API under it on inputs bench/explain_cli_sweep.py found mishandled:
seeds out of range, a pointing tolerance larger than the image, a model with fewer classes than the
data, options of another kind of evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from cli_runner import run_cli

from attnmap.data.shapes import ShapesDataset
from attnmap.errors import InputError
from attnmap.evaluate.pointing import dilate
from attnmap.evaluate.runner import evaluate_methods

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("seed", ["-1", str(2**43 + 1), str(10**30)])
def test_seeds_out_of_range_are_one_line_errors(tmp_path: Path, capsys, seed: str) -> None:
    """-1 and 10**30 were internal errors from numpy and torch; the bound (2**43) is one the random
    baseline takes too (it spaces its maps' seeds 1,000,003 apart in 64 bits)."""
    code, _, err = run_cli(capsys, "evaluate", "--n", "2", "--seed", seed, "--out", tmp_path, "--quiet")
    assert code == 2 and "--seed" in err and len(err.strip().splitlines()) == 1, err


def test_a_tolerance_beyond_the_image_grows_the_mask_as_the_diagonal_does() -> None:
    """A 10**9 px tolerance asked OpenCV for a (2·10**9 + 1)² kernel: out of memory."""
    mask = np.zeros((6, 9), bool)
    mask[2, 3] = True
    assert np.array_equal(dilate(mask, 10**9), dilate(mask, 11)) and dilate(mask, 10**9).all()
    assert dilate(mask, 2).sum() < mask.size  # small radii unchanged


def test_a_model_with_fewer_classes_than_the_data_is_refused() -> None:
    """A 3-class model scored on the 5 shape classes gave a table of meaningless numbers."""
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=32, num_classes=3)
    data = ShapesDataset(2, size=32, seed=1)
    with pytest.raises(InputError, match="the model has 3 classes but the data has 5"):
        evaluate_methods(model.eval(), data, ["attention"], progress=False)


def test_a_model_with_more_classes_than_the_data_declares_is_refused() -> None:
    """A 1000-class ImageNet model scored on the 5 shape classes ran and reported 0% accuracy."""
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=32, num_classes=8)
    data = ShapesDataset(2, size=32, seed=1)
    with pytest.raises(InputError, match="the model has 8 classes but the data has 5"):
        evaluate_methods(model.eval(), data, ["attention"], progress=False)


def test_data_without_declared_classes_may_use_part_of_the_model_classes() -> None:
    """Images labelled only by index (no ``classes``) may hit some of a larger model's classes."""

    class Labelled:  # images, labels and masks, without the data's class names
        def __init__(self, data: ShapesDataset) -> None:
            self.images, self.labels, self.masks = data.images, data.labels, data.masks

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=32, num_classes=8)
    result = evaluate_methods(model.eval(), Labelled(ShapesDataset(2, size=32, seed=1)), ["attention"],
                              progress=False)
    assert [row["method"] for row in result.rows] == ["attention", "random"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--mil-checkpoint", "clam.pt", "--bags", "bags", "--n", "5"],
            "--n is an option of image evaluation",
        ),
        (
            ["--mil-checkpoint", "clam.pt", "--bags", "bags", "--model", "timm:x"],
            "--model is an option of image",
        ),
        (
            ["--run", "run", "--annotations", "ann", "--bags", "bags"],
            "--bags is an option of --mil-checkpoint",
        ),
        (["--run", "run", "--annotations", "ann", "--seed", "3"], "--seed is an option of image evaluation"),
    ],
)
def test_options_of_another_kind_of_evaluation_are_refused(
    tmp_path: Path, capsys, monkeypatch, extra: list[str], message: str
) -> None:
    """They were silently ignored: --n with --bags, --bags with --run (the run was scored alone)."""
    monkeypatch.chdir(tmp_path)
    for folder in ("bags", "run", "ann"):
        (tmp_path / folder).mkdir()
    (tmp_path / "clam.pt").write_bytes(b"")  # never read: refused before
    code, _, err = run_cli(capsys, "evaluate", *extra, "--out", "out", "--quiet")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_preprocess_refuses_what_is_neither_an_image_nor_a_list_in_one_line() -> None:
    from attnmap.vit.preprocess import preprocess

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=32, num_classes=3)
    with pytest.raises(InputError, match="got int"):
        preprocess(model, 3)


@pytest.mark.parametrize("shape", [(0, 8, 8), (2, 0, 8), (2, 8, 0)])
def test_an_empty_set_of_maps_is_a_one_line_error_not_a_reshape_failure_or_nan(shape) -> None:
    """No images (or images of no pixels): the pointing game and the segmentation test raised torch's
    "cannot reshape tensor of 0 elements" and the perturbation curve was NaN at every step."""
    from attnmap.evaluate.perturbation import perturbation_curve
    from attnmap.evaluate.pointing import pointing_accuracy
    from attnmap.evaluate.segmentation import segmentation_scores

    maps, masks = torch.rand(shape), torch.zeros(shape, dtype=torch.bool)
    for score in (pointing_accuracy, segmentation_scores):
        with pytest.raises(InputError, match="no image|no pixel"):
            score(maps, masks)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(3))
    images = torch.rand(shape[0], 3, *shape[1:])
    with pytest.raises(InputError, match="no image|no pixel"):
        perturbation_curve(model, images, maps, torch.zeros(shape[0], dtype=torch.long), positive=True)


def test_a_binary_map_points_like_its_float_copy_and_complex_maps_are_refused() -> None:
    """A thresholded (bool) map failed the pointing game in torch's argmax; complex maps failed in
    argmax and sort instead of being refused."""
    from attnmap.evaluate.perturbation import perturbation_curve
    from attnmap.evaluate.pointing import pointing_hits
    from attnmap.evaluate.segmentation import segmentation_scores

    generator = torch.Generator().manual_seed(0)
    binary = torch.rand(4, 16, 16, generator=generator) > 0.7
    masks = torch.zeros(4, 16, 16, dtype=torch.bool)
    masks[:, 4:8, 4:8] = True
    masks[1, 10:14, 0:4] = True
    assert np.array_equal(pointing_hits(binary, masks, 1), pointing_hits(binary.float(), masks, 1))
    complex_maps = binary.to(torch.complex64)
    for score in (pointing_hits, segmentation_scores):
        with pytest.raises(InputError, match="real"):
            score(complex_maps, masks)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 3))
    with pytest.raises(InputError, match="real"):
        perturbation_curve(model, torch.rand(4, 3, 16, 16), complex_maps, torch.zeros(4).long(), True)
