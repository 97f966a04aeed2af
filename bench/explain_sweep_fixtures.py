"""The explain_cli_sweep's inputs: tiny seeded models saved as files the CLI loads, and image folders
with everything a real folder holds (other files, broken images, odd names and sizes)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

TIMM = ["--model", "timm:vit_tiny_patch16_224", "--model-arg", "depth=2", "--model-arg", "img_size=32"]


def _picture(path: Path, size: tuple[int, int], seed: int, mode: str = "RGB", **save: object) -> Path:
    """A seeded picture (width, height) with a bright square, so that maps are not flat."""
    width, height = size
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 120, size=(height, width, 3), dtype=np.uint8)
    array[height // 4 : height // 2 + 1, width // 4 : width // 2 + 1] = 250
    image = Image.fromarray(array)
    if mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **save)
    return path


def build_models(root: Path) -> dict[str, list[str]]:
    """Model arguments by name: the tiny timm ViT (weights file, a second seed, a headless one, a timm
    folder), a Hugging Face folder from a tiny config, and the bundled shapes ViT."""
    import timm
    import torch

    def vit(seed: int, **kwargs: object) -> torch.nn.Module:
        torch.manual_seed(seed)
        return timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, img_size=32, **kwargs)

    torch.save({"state_dict": vit(0, num_classes=3).state_dict()}, root / "vit.pt")
    torch.save(vit(1, num_classes=3).state_dict(), root / "vit_seed1.pt")
    torch.save(vit(0, num_classes=5).state_dict(), root / "vit_5classes.pt")
    torch.save(vit(2, num_classes=0).state_dict(), root / "vit_headless.pt")
    (root / "empty.pt").write_bytes(b"")
    (root / "garbage.pt").write_bytes(b"not a checkpoint at all")
    folder = root / "timm_folder"
    folder.mkdir()
    from safetensors.torch import save_file

    save_file(vit(3, num_classes=3).state_dict(), folder / "model.safetensors")
    (folder / "config.json").write_text(
        json.dumps(
            {
                "architecture": "vit_tiny_patch16_224",
                "num_classes": 3,
                "model_args": {"depth": 2, "img_size": 32},
            }
        )
    )
    import transformers

    config = transformers.ViTConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        num_labels=3,
    )
    torch.manual_seed(4)
    transformers.ViTForImageClassification(config).eval().save_pretrained(root / "hf_vit")
    np.save(root / "dir192.npy", np.random.default_rng(0).normal(size=192))
    np.save(root / "dir192_b.npy", np.random.default_rng(1).normal(size=192))
    np.save(root / "dir10.npy", np.random.default_rng(0).normal(size=10))
    np.save(root / "dir384.npy", np.random.default_rng(3).normal(size=384))
    np.save(root / "rows_two.npy", np.random.default_rng(4).normal(size=(2, 192)))
    np.save(root / "dir_nan.npy", np.full(192, np.nan))
    np.save(root / "dir_zero.npy", np.zeros(192))
    np.save(root / "dir_rows5.npy", np.random.default_rng(2).normal(size=(5, 192)))
    np.save(root / "dir_empty.npy", np.zeros(0))
    (root / "dir.txt").write_text("1 2 3")
    torch.save({"direction": torch.zeros(192)}, root / "dir_dict.pt")
    return {
        "timm": [*TIMM, "--checkpoint", str(root / "vit.pt")],
        "timm_seed1": [*TIMM, "--checkpoint", str(root / "vit_seed1.pt")],
        "headless": [*TIMM, "--model-arg", "num_classes=0", "--checkpoint", str(root / "vit_headless.pt")],
        "tokens": [
            *TIMM,
            "--model-arg",
            "num_classes=0",
            "--model-arg",
            "global_pool=''",
            "--checkpoint",
            str(root / "vit_headless.pt"),
        ],
        "timm_folder": ["--model", f"timm:{folder}"],
        "hf": ["--model", f"hf:{root / 'hf_vit'}"],
        "shapes": ["--model", "attnmap:shapes-vit"],
    }


def build_images(root: Path) -> dict[str, Path]:
    """Image folders and files by name (paths under ``root/images``)."""
    base = root / "images"
    made: dict[str, Path] = {}
    plain = base / "plain"
    for index, size in enumerate([(40, 40), (48, 36), (36, 52)]):
        _picture(plain / f"img{index}.png", size, index)
    made["plain"] = plain
    made["one"] = plain / "img0.png"
    made["one_b"] = plain / "img1.png"

    mixed = base / "mixed"
    _picture(mixed / "good.png", (40, 40), 10)
    _picture(mixed / "photo.jpg", (44, 40), 11, quality=90)
    _picture(mixed / "UPPER.PNG", (40, 40), 12)
    _picture(mixed / "grey.png", (40, 40), 13, mode="L")
    _picture(mixed / "alpha.png", (40, 40), 14, mode="RGBA")
    _picture(mixed / "palette.gif", (40, 40), 15, mode="P")
    _picture(mixed / "nested" / "deep.png", (40, 40), 16)
    _picture(mixed / ".hidden.png", (40, 40), 17)
    (mixed / "notes.txt").write_text("not an image")
    (mixed / "zero.png").write_bytes(b"")
    (mixed / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (mixed / "truncated.jpg").write_bytes((mixed / "photo.jpg").read_bytes()[:200])
    (mixed / "fake.png").write_bytes(b"<html>not a png</html>")
    with contextlib.suppress(OSError):
        os.symlink(mixed / "good.png", mixed / "link.png")
        os.symlink(mixed / "missing_target.png", mixed / "broken_link.png")
    made["mixed"] = mixed

    clean_mixed = base / "clean_mixed"  # images, other files and a subfolder: no broken image
    _picture(clean_mixed / "a.png", (40, 40), 20)
    _picture(clean_mixed / "sub" / "b.png", (40, 40), 21)
    (clean_mixed / "readme.md").write_text("# notes")
    (clean_mixed / ".DS_Store").write_bytes(b"\x00\x01")
    (clean_mixed / "._a.png").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 60)  # macOS AppleDouble
    made["clean_mixed"] = clean_mixed

    unreadable = base / "unreadable"
    _picture(unreadable / "ok.png", (40, 40), 22)
    locked = _picture(unreadable / "locked.png", (40, 40), 23)
    locked.chmod(0)
    made["unreadable"] = unreadable

    same_stem = base / "same_stem"
    _picture(same_stem / "sub1" / "a.png", (40, 40), 30)
    _picture(same_stem / "sub2" / "a.png", (40, 40), 31)
    made["stem1"], made["stem2"] = same_stem / "sub1" / "a.png", same_stem / "sub2" / "a.png"

    two_ext = base / "two_ext"
    _picture(two_ext / "a.png", (40, 40), 32)
    _picture(two_ext / "a.jpg", (40, 40), 33, quality=95)
    _picture(two_ext / "a_2.png", (40, 40), 34)
    made["two_ext"] = two_ext

    case = base / "case"
    _picture(case / "A.png", (40, 40), 35)
    _picture(case / "a.png", (40, 40), 36)
    made["case"] = case

    names = base / "names"
    for index, name in enumerate(
        ["with space.png", "ünïcødé é.png", "日本語.png", "a'quote.png", "-dash.png"]
    ):
        _picture(names / name, (40, 40), 40 + index)
    made["names"] = names

    long = base / "long"
    for name in ("x" * 200, "é" * 120, "y" * 200 + "_b"):  # 200 bytes, 240 bytes (UTF-8), two of one start
        _picture(long / f"{name}.png", (40, 40), len(name))
    made["long"] = long

    sizes = base / "sizes"
    for name, size in {
        "one_pixel.png": (1, 1),
        "tiny8.png": (8, 8),
        "patch16.png": (16, 16),
        "wide.png": (2000, 20),
        "tall.png": (20, 2000),
        "thin_wide.png": (400, 16),
        "big.png": (1200, 900),
    }.items():
        _picture(sizes / name, size, 50)
    made["sizes"] = sizes

    modes = base / "modes"
    _picture(modes / "cmyk.jpg", (40, 40), 60, mode="CMYK")
    Image.fromarray((np.random.default_rng(61).random((40, 40)) * 65535).astype(np.uint16)).save(
        modes / "w16.png"
    )
    Image.fromarray(np.random.default_rng(62).random((40, 40)).astype(np.float32)).save(modes / "float.tif")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(modes / "black.png")
    made["modes"] = modes
    made["black"] = modes / "black.png"

    exif = Image.fromarray(np.random.default_rng(63).integers(0, 256, (60, 40, 3), dtype=np.uint8))
    tags = Image.Exif()
    tags[0x0112] = 6  # Orientation: turn 90° clockwise to show it upright (40 × 60 stored, 60 × 40 shown)
    exif.save(modes.parent / "exif.jpg", exif=tags)
    made["exif"] = modes.parent / "exif.jpg"
    (base / "empty_dir").mkdir()
    made["empty_dir"] = base / "empty_dir"
    only_text = base / "only_text"
    only_text.mkdir()
    (only_text / "a.txt").write_text("x")
    made["only_text"] = only_text
    return made
