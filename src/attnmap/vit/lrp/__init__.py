"""Chefer et al. (CVPR 2021) LRP relevance for timm ViTs: transformer_attribution, lrp, lrp_rollout,
lrp_attention. Importing this package registers the four methods with `attnmap.explain`."""

from attnmap.vit.lrp import methods as _methods  # noqa: F401  (registers the methods)
