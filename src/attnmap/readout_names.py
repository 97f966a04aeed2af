"""The names of the token read-outs (`attnmap.vit.readout`): the class token, the mean of the
patch tokens, or both concatenated.

Why here and not in `attnmap.vit`: importing anything of that package registers the explanation
methods, which imports torch and timm (seconds), and ``attnmap explain --help`` shows these names
as the choices of ``--readout``.
"""

from __future__ import annotations

TOKEN_READOUTS = ("cls", "patch_mean", "cls_and_patch_mean")
