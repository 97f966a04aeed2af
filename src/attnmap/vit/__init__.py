"""Explaining Vision Transformers: capture, methods, LRP and the method registry.

Importing this package registers the built-in methods (timm's pattern: `attnmap.vit.registry` only
stores them; the method modules register themselves when imported here). User methods come in
through `attnmap.register_method` or the ``attnmap.methods`` entry-point group.
"""

from attnmap.vit import lrp as _lrp  # noqa: F401  (registers the LRP methods)
from attnmap.vit import methods as _methods  # noqa: F401  (registers the attention methods)
