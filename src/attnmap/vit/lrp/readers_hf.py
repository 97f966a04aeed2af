"""LRP twin of Hugging Face vision transformers, read by role (see `attnmap.vit.lrp.readers`).

What the twin's output is follows `attnmap.vit.targets.output_tensor`: a classifier's logits,
CLIP's ``image_embeds`` (WithProjection), else ``pooler_output`` when the model has one, else the
tokens. Pooling per family: CLS (ViT, ViT-MSN, DeiT, DINOv2, DINOv3, CLIP), ½(CLS head + distillation
head) for DeiT with teacher, concat(CLS, patch mean) for DINOv2's classifier, patch mean + norm (BEiT
and Data2Vec-Vision with mean pooling), the mean of every token (I-JEPA's classifier: it has no
prefix tokens), the attention-pool head (SigLIP).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn

from attnmap.errors import UnsupportedModelError
from attnmap.vit.adapters_hf import BEIT_TYPES, layout
from attnmap.vit.lrp.block import (
    _ACTIVATIONS,
    BlockTwin,
    Rope,
    is_norm,
    layer_scale,
    read_norm,
    weight_and_bias,
)
from attnmap.vit.lrp.pool import PoolTwin
from attnmap.vit.lrp.readers import GenericTwin, _concat_qkv

_Q, _K, _V = ("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")
_ATTN_OUT = ("o_proj", "out_proj")
_FC1, _GATE, _FC2 = ("fc1", "up_proj"), ("gate_proj",), ("fc2", "down_proj")


def find_trunk(model: nn.Module) -> tuple[nn.Module, nn.ModuleList]:
    """The module holding ``embeddings`` and the list of transformer layers."""
    depth = int(layout(model)[1].num_hidden_layers)
    for module in model.modules():
        if isinstance(getattr(module, "embeddings", None), nn.Module):
            for child in module.modules():
                if isinstance(child, nn.ModuleList) and len(child) == depth:
                    return module, child
    raise UnsupportedModelError(f"{type(model).__name__}: no embeddings and {depth} transformer layers found")


def _relative_biases(root: nn.Module, exclude: nn.Module | None = None) -> list[nn.Module]:
    """HF BEiT-family relative position bias modules under ``root`` (not under ``exclude``)."""
    skip = {id(m) for m in exclude.modules()} if exclude is not None else set()
    return [
        m for m in root.modules() if type(m).__name__.endswith("RelativePositionBias") and id(m) not in skip
    ]


def _role(name: str) -> str | None:
    last = name.rsplit(".", 1)[-1]
    for role, names in (
        ("q", _Q),
        ("k", _K),
        ("v", _V),
        ("out", _ATTN_OUT),
        ("fc1", _FC1),
        ("gate", _GATE),
        ("fc2", _FC2),
    ):
        if last in names:
            return role
    if name.endswith("attention.output.dense"):
        return "out"
    if name.endswith("intermediate.dense"):
        return "fc1"
    if name.endswith("output.dense"):
        return "fc2"
    return None


def read_layer(layer: nn.Module, index: int, num_heads: int, prefix: str) -> BlockTwin:
    name = f"{prefix}.{index}"
    linears: dict[str, nn.Linear] = {}
    for sub_name, module in layer.named_modules():
        if isinstance(module, nn.Linear):
            role = _role(sub_name)
            if role is None or role in linears:
                raise UnsupportedModelError(f"{name}.{sub_name} (Linear) has no LRP role")
            linears[role] = module
    missing = [role for role in ("q", "k", "v", "out", "fc1", "fc2") if role not in linears]
    if missing:
        raise UnsupportedModelError(
            f"{name} ({type(layer).__name__}): no {', '.join(missing)} projection found"
        )
    norms = [module for _, module in layer.named_modules() if is_norm(module)]
    if len(norms) != 2:
        raise UnsupportedModelError(
            f"{name} ({type(layer).__name__}) has {len(norms)} norms; expected pre-norm"
        )
    scales = [module for _, module in layer.named_modules() if "LayerScale" in type(module).__name__]
    gammas = [getattr(layer, f"lambda_{i}", None) for i in (1, 2)]
    if scales:
        gammas = [layer_scale(scale, f"{name}.layer_scale") for scale in scales]
    acts = [module for _, module in layer.named_modules() if isinstance(module, _ACTIVATIONS)]
    if len(acts) != 1:
        raise UnsupportedModelError(f"{name}: expected one activation module, found {len(acts)}")
    weight, bias = _concat_qkv([weight_and_bias(linears[r], f"{name}.{r}") for r in ("q", "k", "v")])
    weights = {"qkv_w": weight, "qkv_b": bias}
    weights["proj_w"], weights["proj_b"] = weight_and_bias(linears["out"], f"{name}.attention output")
    glu = "gate" in linears
    if glu:
        weights["fc1_w"], weights["fc1_b"] = _concat_qkv(
            [weight_and_bias(linears[r], f"{name}.{r}") for r in ("fc1", "gate")]
        )
    else:
        weights["fc1_w"], weights["fc1_b"] = weight_and_bias(linears["fc1"], f"{name}.fc1")
    weights["fc2_w"], weights["fc2_b"] = weight_and_bias(linears["fc2"], f"{name}.fc2")
    weights["ls1"] = None if gammas[0] is None else layer_scale(gammas[0], f"{name}.lambda_1")
    weights["ls2"] = None if gammas[1] is None else layer_scale(gammas[1], f"{name}.lambda_2")
    head_dim = weight.shape[0] // 3 // num_heads
    return BlockTwin(
        index=index,
        num_heads=num_heads,
        head_dim=head_dim,
        scale=head_dim**-0.5,
        norm1=norms[0],
        norm2=norms[1],
        act=acts[0],
        weights=weights,
        linears={"proj": linears["out"].weight, "fc2": linears["fc2"].weight}
        | ({} if glu else {"fc1": linears["fc1"].weight}),
        glu=glu,
    )


class HFTwin(GenericTwin):
    def __init__(self, model: nn.Module) -> None:
        kind, config = layout(model)
        tower_classifier = config is not model.config  # SigLIP / CLIP ForImageClassification
        name = type(model).__name__
        trunk, layers = find_trunk(model)
        conv = next((m for m in trunk.embeddings.modules() if isinstance(m, nn.Conv2d)), None)
        if conv is None:
            raise UnsupportedModelError(f"{name}: no patch convolution in the embeddings")
        registers = int(getattr(config, "num_register_tokens", 0) or 0) if kind.startswith("dino") else 0
        prefix = {"deit": 2, "siglip_vision_model": 0, "ijepa": 0}.get(kind, 1) + registers
        self._setup(model, conv, prefix)
        self.trunk = trunk
        self.has_class_token = prefix > 0
        embeddings = trunk.embeddings
        cls_param = getattr(embeddings, "cls_token", getattr(embeddings, "class_embedding", None))
        self.prefix_params = (cls_param, getattr(embeddings, "distillation_token", None)) if prefix else ()
        children = dict(trunk.named_children())
        # DINOv3: no position embedding added; RoPE on the patch tokens' q and k (prefix left out)
        self._rope = children.get("rope_embeddings") if kind == "dinov3_vit" else None
        self.norm_pre = read_norm(children.get("pre_layrnorm"), "pre_layrnorm")
        final = children.get("norm" if kind == "dinov3_vit" else "layernorm")
        self.global_pool = "token"
        classifier = "ForImageClassification" in name
        if tower_classifier:  # mean of the patch tokens (SigLIP: after its post-layernorm), linear head
            self.global_pool = "avg"
            if kind == "siglip_vision_model":
                final = children.get("post_layernorm")
        elif kind == "clip_vision_model":
            self.fc_norm = read_norm(children.get("post_layernorm"), "post_layernorm")
            projection = getattr(model, "visual_projection", None)
            if projection is not None:
                self._set_head(projection, "visual_projection")
                self.projection = True
        elif kind == "siglip_vision_model":
            final = children.get("post_layernorm")
            head = children.get("head")
            if head is not None:
                self.attn_pool = PoolTwin.read_siglip(head)
                self.global_pool = "map"
            else:
                self.global_pool = ""
        elif kind in BEIT_TYPES:
            pooler = children.get("pooler")
            norm = getattr(pooler, "layernorm", None) if pooler is not None else None
            if norm is not None:
                self.global_pool = "avg"
                self.fc_norm = read_norm(norm, "pooler.layernorm")
            elif pooler is None and not classifier:
                self.global_pool = ""
        elif kind.startswith("dinov2") and classifier:
            self.global_pool = "cls_mean"
        elif kind == "ijepa":
            if children.get("pooler") is not None:
                raise UnsupportedModelError(f"{name}: I-JEPA's pooler reads a patch token; build it without")
            self.global_pool = "avg" if classifier else ""
        elif kind in ("vit", "vit_msn", "deit") and not classifier:
            pooler = children.get("pooler")
            if pooler is None:
                self.global_pool = ""
            else:
                w, b = weight_and_bias(pooler.dense, "pooler.dense")
                act = next((m for m in pooler.modules() if isinstance(m, _ACTIVATIONS)), None)
                if act is None:
                    raise UnsupportedModelError(
                        f"pooler ({type(pooler).__name__}): activation has no LRP rule"
                    )
                self.pooler = (w, b, act)
        self.final_norm = read_norm(final, "layernorm")
        if classifier:
            if kind == "deit" and hasattr(model, "distillation_classifier"):
                self.distilled = True
                cw, cb = weight_and_bias(model.cls_classifier, "cls_classifier")
                dw, db = weight_and_bias(model.distillation_classifier, "distillation_classifier")
                self.head_w = torch.cat([cw, dw], dim=1) / 2
                self.head_b = None if cb is None and db is None else ((cb if cb is not None else 0) + db) / 2
            else:
                self._set_head(getattr(model, "classifier", None), "classifier")
        heads = int(config.num_attention_heads)
        prefix_name = "layers"
        self.blocks = [read_layer(layer, i, heads, prefix_name) for i, layer in enumerate(layers)]
        for block in self.blocks:
            block.rope = self._rope is not None
        # BEiT / Data2Vec-Vision: a relative position bias on the logits, per layer and/or shared,
        # sized by the input's patch grid (read in embed_tokens): like timm Beit's, no relevance
        self._bias_input: tuple[tuple[int, int], bool, int] | None = None
        shared = _relative_biases(trunk, exclude=layers)
        for block, layer in zip(self.blocks, layers, strict=True):
            biases = _relative_biases(layer) + shared
            if biases:
                block.attn_bias = self._relative_bias(biases)
        self._takes_interpolate = (
            "interpolate_pos_encoding" in inspect.signature(trunk.embeddings.forward).parameters
        )
        size = config.image_size
        self._image_size = (size, size) if isinstance(size, int) else tuple(size)
        patch = config.patch_size
        self._patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
        self._finish()

    def _relative_bias(self, modules: list[nn.Module]) -> Callable[[], torch.Tensor]:
        """(heads, N, N): the sum of ``modules``' biases for the last embedded input, as HF computes it
        (its table resampled to the input's grid, interpolated to N tokens when it resizes positions)."""

        def bias() -> torch.Tensor:
            if self._bias_input is None:
                raise RuntimeError("the relative position bias is read before the tokens were embedded")
            grid, interpolate, tokens = self._bias_input
            with torch.no_grad():
                return sum(module(grid, interpolate, dim_size=tokens)[0] for module in modules)

        return bias

    def embed_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, Rope | None]:
        kwargs = {}
        if self._takes_interpolate and tuple(images.shape[-2:]) != self._image_size:
            kwargs["interpolate_pos_encoding"] = True
        tokens = self.trunk.embeddings(images, **kwargs)
        if isinstance(tokens, tuple):
            tokens = tokens[0]
        grid = (images.shape[-2] // self._patch[0], images.shape[-1] // self._patch[1])
        self._bias_input = (grid, bool(kwargs), int(tokens.shape[1]))
        if self._rope is None:
            return tokens, None
        cos, sin = self._rope(images)  # HF's rotate-half layout: timm's apply_rot_embed_cat, half=True
        return tokens, Rope(torch.cat([sin, cos], dim=-1), self.num_prefix, half=True)
