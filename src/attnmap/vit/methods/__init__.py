"""Attention-based explanation methods for ViTs, registered with `attnmap.vit.registry`.

Each method is a pure function of captured tensors (usable on its own, e.g. `rollout(...)`) plus a
thin registered wrapper that captures attention (and its gradient) from the user's model:

- ``"attention"``: raw attention of one block, query row, head mean (class independent).
- ``"rollout"``: Abnar & Zuidema attention rollout (class independent).
- ``"attn_gradcam"``: Grad-CAM on the last block's attention.
- ``"grad_rollout"``: Chefer et al. (ICCV 2021) gradient-weighted attention rollout.

"Query row": the row of A standing for what the classifier reads — the CLS token's row for models
that classify from the class token, the mean of the patch rows for patch-pooling models
(timm ``global_pool="avg"``, ``class_token=False``). See `attnmap.vit.capture.Captured`.
"""

from attnmap.vit.methods.attention import attention_map, query_attention
from attnmap.vit.methods.gradients import attention_gradcam, gradient_rollout
from attnmap.vit.methods.rollout import attention_rollout, fuse_heads

__all__ = [
    "attention_gradcam",
    "attention_map",
    "attention_rollout",
    "fuse_heads",
    "gradient_rollout",
    "query_attention",
]
