"""attnmap: attention maps people can read and trust.

ViTs: ``attnmap.explain(model, images, method)`` for raw attention, rollout, attention Grad-CAM,
gradient rollout and Chefer et al.'s LRP methods on timm / Hugging Face models as they are;
``attnmap.load_model("timm:NAME" | "hf:DIR" | "attnmap:shapes-vit")`` and
``attnmap.preprocess(model, paths)`` (the model's own data config) to get there;
``attnmap.register_method(name, fn)`` adds a method to all of these, the CLI and `attnmap.evaluate`.
Attention MIL: `attnmap.mil`. Whole slides: `attnmap.wsi`. Pictures: `attnmap.render`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from attnmap._version import __version__
from attnmap.errors import AttnmapError, InputError, UnsupportedModelError
from attnmap.lazy_exports import lazy_exports

# The names below import torch (and timm) with their modules, which takes seconds: they are
# imported on first use, so that ``import attnmap.cli.main`` (the console script's first line) is
# quick and a Ctrl-C or SIGTERM during the command's own ``import torch`` reaches its handlers.
_LAZY: dict[str, str] = {
    "normalize": "attnmap.render",
    "overlay": "attnmap.render",
    "save_grid": "attnmap.render",
    "upsample": "attnmap.render",
    "explain": "attnmap.vit.explain",
    "load_model": "attnmap.vit.models",
    "load_image": "attnmap.vit.preprocess",
    "preprocess": "attnmap.vit.preprocess",
    "ReadoutDirection": "attnmap.vit.readout",
    "methods": "attnmap.vit.registry",
    "register_method": "attnmap.vit.registry",
    "resolve_target": "attnmap.vit.registry",
    "unregister_method": "attnmap.vit.registry",
}

if TYPE_CHECKING:
    from attnmap.render import normalize, overlay, save_grid, upsample
    from attnmap.vit.explain import explain
    from attnmap.vit.models import load_model
    from attnmap.vit.preprocess import load_image, preprocess
    from attnmap.vit.readout import ReadoutDirection
    from attnmap.vit.registry import methods, register_method, resolve_target, unregister_method


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "AttnmapError",
    "InputError",
    "ReadoutDirection",
    "UnsupportedModelError",
    "__version__",
    "explain",
    "load_image",
    "load_model",
    "methods",
    "normalize",
    "overlay",
    "preprocess",
    "register_method",
    "resolve_target",
    "save_grid",
    "unregister_method",
    "upsample",
]
