"""The explain_cli_sweep's API cases: the `attnmap.explain`, `attnmap.preprocess`, `attnmap.load_image`
and rendering edges the command line calls, given what a caller may pass (see explain_cli_sweep.py).

A case is a function: it returns a map or picture (checked: finite, the size it should have) or
raises. `InputError` with one line is ``error``; any other exception is ``crash``; a result that
fails its check, or a result where a refusal was due, is ``wrong``.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image


class WrongResultError(Exception):
    """A result failed its check."""


def _finite(value: object, shape: tuple | None = None) -> object:
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise WrongResultError(f"result holds NaN/inf (shape {array.shape})")
    if shape is not None and tuple(array.shape) != tuple(shape):
        raise WrongResultError(f"result has shape {array.shape}, expected {shape}")
    return value


def _case(s, name: str, fn: Callable[[], object], expect: str = "ok") -> None:
    from attnmap.errors import InputError

    try:
        fn()
        cls, detail = "ok", ""
    except WrongResultError as error:
        cls, detail = "wrong", str(error)
    except InputError as error:
        text = str(error).strip()
        cls, detail = ("error", text) if text and "\n" not in text else ("crash", f"multi-line: {text[:150]}")
    except Exception as error:  # noqa: BLE001 - anything else is what the sweep looks for
        where = traceback.extract_tb(error.__traceback__)[-1]
        cls, detail = "crash", f"{type(error).__name__}: {error} @ {where.name}:{where.lineno}"
    s.rec.record(cls, name, detail, expect)


def api_cases(s) -> None:
    import timm

    import attnmap

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, img_size=32, num_classes=3)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    c = lambda name, fn, expect="ok": _case(s, name, fn, expect)  # noqa: E731
    ex = attnmap.explain
    c("explain: a batch of 2", lambda: _finite(ex(model, x, "rollout"), (2, 2, 2)))
    c("explain: an empty batch", lambda: ex(model, x[:0], "rollout"), "error")
    c("explain: (C, H, W) without a batch", lambda: ex(model, x[0], "rollout"), "error")
    c("explain: 1 channel for an RGB model", lambda: ex(model, x[:, :1], "rollout"), "error")
    c("explain: uint8 images", lambda: ex(model, (x * 50).to(torch.uint8), "rollout"), "error")
    c("explain: float16 images, float32 model", lambda: ex(model, x.half(), "rollout"), "error")
    c("explain: float64 images, float32 model", lambda: ex(model, x.double(), "rollout"), "error")
    c(
        "explain: NaN pixel",
        lambda: ex(model, x.clone().index_fill_(2, torch.tensor([0]), float("nan")), "rollout"),
        "error",
    )
    c("explain: 48x48 input, 32 px model", lambda: ex(model, torch.randn(1, 3, 48, 48), "rollout"), "error")
    c(
        "explain: requires_grad input",
        lambda: _finite(ex(model, x.clone().requires_grad_(True), "lrp"), (2, 32, 32)),
    )
    c("explain: target list too short", lambda: ex(model, x, "grad_rollout", [1]), "error")
    c("explain: target per image", lambda: _finite(ex(model, x, "grad_rollout", [0, 2]), (2, 2, 2)))
    c(
        "explain: target tensor of classes",
        lambda: _finite(ex(model, x, "grad_rollout", torch.tensor([0, 2])), (2, 2, 2)),
    )
    c("explain: target 3 of 3 classes", lambda: ex(model, x, "grad_rollout", 3), "error")
    c("explain: target True", lambda: ex(model, x, "grad_rollout", True), "error")
    c("explain: target 1.0", lambda: ex(model, x, "grad_rollout", 1.0), "error")
    c("explain: target 'cat'", lambda: ex(model, x, "grad_rollout", "cat"), "error")
    c("explain: unknown method", lambda: ex(model, x, "nope"), "error")
    c("explain: unknown option", lambda: ex(model, x, "rollout", nope=1), "error")
    c("explain: model not a module", lambda: ex("timm:vit", x, "rollout"), "error")
    c("explain: a CNN", lambda: ex(torch.nn.Conv2d(3, 3, 3), x, "rollout"), "error")
    c("explain: model in train mode", lambda: _finite(ex(model.train(), x, "rollout"), (2, 2, 2)))
    model.eval()
    pre = attnmap.preprocess
    c("preprocess: []", lambda: pre(model, []), "error")
    c(
        "preprocess: a palette PIL image",
        lambda: _finite(pre(model, Image.new("P", (40, 40)))[0], (1, 3, 32, 32)),
    )
    c("preprocess: a 1x1 array", lambda: pre(model, np.zeros((1, 1, 3), np.uint8)), "error")
    c("preprocess: a bool array", lambda: _finite(pre(model, np.ones((40, 40), bool))[0], (1, 3, 32, 32)))
    c("preprocess: float array with NaN", lambda: _finite(pre(model, np.full((40, 40), np.nan))[0]), "error")
    c(
        "preprocess: float array with one NaN",
        lambda: _finite(pre(model, np.where(np.eye(40) > 0, np.nan, 0.5))[0], (1, 3, 32, 32)),
    )
    c("preprocess: (5, 40, 40) array", lambda: pre(model, np.zeros((5, 40, 40), np.uint8)), "error")
    c("preprocess: a 4-D array", lambda: pre(model, np.zeros((1, 40, 40, 3), np.uint8)), "error")
    c("preprocess: an int", lambda: pre(model, 3), "error")
    c("preprocess: a missing file", lambda: pre(model, "nope.png"), "error")
    c("load_image: a folder", lambda: attnmap.load_image(s.root / "images"), "error")
    c("load_image: min_side 0", lambda: attnmap.load_image(s.images["one"], min_side=0), "error")
    rgb = np.zeros((32, 32, 3), np.uint8)
    heat = np.random.default_rng(0).random((2, 2))
    c("overlay: 2x2 map on 32 px", lambda: _finite(attnmap.overlay(rgb, heat), (32, 32, 3)))
    c("overlay: NaN map", lambda: _finite(attnmap.overlay(rgb, np.full((2, 2), np.nan))), "error")
    c("overlay: constant map", lambda: _finite(attnmap.overlay(rgb, np.zeros((2, 2))), (32, 32, 3)))
    c("overlay: 3-D map", lambda: attnmap.overlay(rgb, np.zeros((2, 2, 2))), "error")
    c("overlay: empty map", lambda: attnmap.overlay(rgb, np.zeros((0, 2))), "error")
    c("overlay: alpha 2", lambda: attnmap.overlay(rgb, heat, alpha=2), "error")
    c("overlay: cmap nope", lambda: attnmap.overlay(rgb, heat, cmap="nope"), "error")
    c("overlay: 1x1 image", lambda: _finite(attnmap.overlay(rgb[:1, :1], heat), (1, 1, 3)))
    c("normalize: NaN map", lambda: _finite(attnmap.normalize(np.full((2, 2), np.nan), "minmax")), "error")
    c("normalize: mode nope", lambda: attnmap.normalize(heat, "nope"), "error")
    c("upsample: to 0x0", lambda: attnmap.upsample(torch.rand(1, 2, 2), (0, 0)), "error")
    c("save_grid: no images", lambda: attnmap.save_grid([], [], s.root / "outs" / "grid.png"), "error")
    c(
        "save_grid: titles mismatch",
        lambda: attnmap.save_grid([rgb], ["a", "b"], s.root / "outs" / "g.png"),
        "error",
    )
    c("save_grid: suffix .xyz", lambda: attnmap.save_grid([rgb], ["a"], s.root / "outs" / "g.xyz"), "error")
