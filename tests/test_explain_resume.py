"""`explain` resumes: images whose outputs are intact with the same fingerprint are skipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import attnmap.vit.batch as batch
from attnmap.io_utils import read_png_text

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def model_and_images(tmp_path_factory) -> tuple[torch.nn.Module, list[Path]]:
    root = tmp_path_factory.mktemp("resume")
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=32, num_classes=3)
    rng = np.random.default_rng(0)
    paths = []
    for folder, name in (("a", "x"), ("b", "x"), ("a", "y")):  # two images share the stem "x"
        (root / folder).mkdir(exist_ok=True)
        paths.append(root / folder / f"{name}.png")
        Image.fromarray(rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)).save(paths[-1])
    return model.eval(), paths


def test_rerun_skips_finished_images_and_redoes_changed_or_damaged_ones(
    model_and_images, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, paths = model_and_images
    explained: list[int] = []
    original = batch.explain

    def counting(model, images, *args, **kwargs):
        explained.append(len(images))
        return original(model, images, *args, **kwargs)

    monkeypatch.setattr(batch, "explain", counting)
    out = tmp_path / "out"

    def run(**kwargs) -> list[Path]:
        explained.clear()
        return batch.explain_paths(
            paths, model, "attention", None, out, batch_size=2, progress=False, **kwargs
        )

    first = run()
    assert sum(explained) == 3 and {p.name for p in first} >= {"x_attention.png", "x_2_attention.png"}
    reference = {p.name: np.asarray(Image.open(p)) for p in first if p.suffix == ".png"}
    assert sorted(run()) == sorted(first) and explained == []  # all reused
    (out / "y_attention.png").write_bytes((out / "y_attention.png").read_bytes()[:100])  # damaged
    np.save(out / "x_2_attention.npy", np.zeros(1))
    (out / "x_2_attention.npy").write_bytes((out / "x_2_attention.npy").read_bytes()[:-4])  # cut short
    run()
    assert sum(explained) == 2
    assert all(np.array_equal(np.asarray(Image.open(out / name)), image) for name, image in reference.items())
    run(alpha=0.3)  # a drawing option changed: every image again
    assert sum(explained) == 3 and read_png_text(out / "x_attention.png")["attnmap_fingerprint"]
