"""The timm VisionTransformer computing what a Hugging Face ViT, DINOv2 or CLIP vision encoder computes.

Why: the fine maps' conservative relevance (`attnmap.wsi.heatmap.encoder_relevance`) is written for
timm's VisionTransformer. Phikon (ViTModel) and Phikon-v2 / Midnight / Hibou-style DINOv2 models are
the same architecture under other names, so their weights are copied by role into a timm model of
the same shape, at the encoder's input size: the position embeddings resampled by the Hugging Face
model itself (the very numbers its forward adds), the class token's position folded into the class
token (timm's ``no_embed_class`` layout, which also places registers as DINOv2 does); DINOv2
ViT-g's SiLU-gated MLP (Midnight) becomes timm's SwiGLU. A CLIP vision tower (PLIP) is a pre-norm
ViT with QuickGELU: its ``pre_layrnorm`` is timm's ``norm_pre``, its ``post_layernorm`` (which CLIP
applies to the pooled class token only) the final norm where the read-out uses it (``pooler``,
``embeds``), and its projection the twin's head. The twin is checked against the encoder's own
forward before any map is made.
"""

from __future__ import annotations

import copy
import functools

import torch
from timm.layers import Mlp, QuickGELU, SwiGLU
from timm.layers.activations import GELUTanh
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from attnmap.errors import UnsupportedModelError
from attnmap.vit.lrp.block import is_norm, layer_scale
from attnmap.vit.lrp.readers_hf import _role, find_trunk
from attnmap.vit.timm_build import ClassAndPatchMeanViT

_POOLS = {"cls": "token", "patch_mean": "avg", "cls_and_patch_mean": "class_and_patch_mean"}


def timm_twin(model: nn.Module, readout: str, input_size: int) -> VisionTransformer:
    """A timm VisionTransformer with ``model``'s weights whose output is the ``readout`` features of
    ``model`` on ``input_size``² inputs; `UnsupportedModelError` for anything else."""
    config = model.config
    kind = config.model_type
    original_readout = readout
    clip = kind == "clip_vision_model"
    if kind not in ("vit", "dinov2", "dinov2_with_registers") and not clip:
        raise UnsupportedModelError(
            f"fine maps of a Hugging Face {kind} encoder are not supported (ViT, DINOv2 and CLIP vision are)"
        )
    # DINOv2's pooler output is its normed class token; CLIP's is its class token after
    # post_layernorm (its last_hidden_state is not normed), projected for image_embeds
    pooled = clip and readout in ("pooler", "embeds")
    if readout == "pooler" and kind.startswith("dinov2") or pooled:
        readout = "cls"
    if readout == "pooler" and kind == "vit":
        raise UnsupportedModelError(
            "fine maps of the read-out 'pooler': a ViTModel's pooler (dense + tanh) has no conservative "
            "rule here; use readout cls"
        )
    if readout not in _POOLS:
        raise UnsupportedModelError(f"fine maps of the read-out {readout!r} of a {kind} are not supported")
    swiglu = bool(getattr(config, "use_swiglu_ffn", False))  # DINOv2 ViT-g (Midnight): SiLU-gated
    # the activations a twin's Mlp computes as the encoder does (its own forward checks it)
    acts = {"gelu": nn.GELU, "gelu_new": GELUTanh, "gelu_pytorch_tanh": GELUTanh, "quick_gelu": QuickGELU}
    if config.hidden_act not in acts and not swiglu:
        raise UnsupportedModelError(f"fine maps of an MLP with {config.hidden_act!r} are not supported here")
    patch = config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0]
    trunk, layers = find_trunk(model)
    embeddings = trunk.embeddings
    # the MLP's hidden width as saved (a SwiGLU's is rounded), so timm's int(dim · ratio) gives it
    hidden = _linears(layers[0])["fc1"].out_features if len(layers) else config.hidden_size
    registers = int(getattr(config, "num_register_tokens", 0) or 0)
    cls = ClassAndPatchMeanViT if readout == "cls_and_patch_mean" else VisionTransformer
    options = dict(
        img_size=input_size,
        patch_size=patch,
        in_chans=config.num_channels,
        embed_dim=config.hidden_size,
        depth=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        mlp_ratio=(hidden + 0.5) / config.hidden_size,
        mlp_layer=SwiGLU if swiglu else Mlp,
        qkv_bias=bool(getattr(config, "qkv_bias", True)),
        init_values=1.0 if kind.startswith("dinov2") else None,  # LayerScale γ copied below
        pre_norm=clip,  # CLIP's pre_layrnorm (and a patch convolution without bias)
        class_token=True,
        reg_tokens=registers,
        no_embed_class=True,
        global_pool="token" if cls is ClassAndPatchMeanViT else _POOLS[readout],
        fc_norm=False,
        num_classes=0,
        norm_layer=functools.partial(nn.LayerNorm, eps=config.layer_norm_eps),
        act_layer=nn.SiLU if swiglu else acts[config.hidden_act],
    )
    reference = next(model.parameters())
    twin = cls(**options).to(dtype=reference.dtype, device=reference.device).eval()
    with torch.no_grad():
        _copy_embeddings(twin, embeddings, input_size)
        for index, (block, layer) in enumerate(zip(twin.blocks, layers, strict=True)):
            _copy_layer(block, layer, f"layer {index}")
        children = dict(trunk.named_children())
        if clip:
            twin.norm_pre.load_state_dict(children["pre_layrnorm"].state_dict())
            twin.norm = children["post_layernorm"] if pooled else nn.Identity()
            twin.norm = copy.deepcopy(twin.norm)
        else:
            twin.norm.load_state_dict(children["layernorm"].state_dict())
        projection = getattr(model, "visual_projection", None)
        if pooled and projection is not None and original_readout == "embeds":
            twin.head = copy.deepcopy(projection)  # image_embeds: a linear map of the pooled token
    return twin


def _copy_embeddings(twin: VisionTransformer, embeddings: nn.Module, input_size: int) -> None:
    conv = next(m for m in embeddings.modules() if isinstance(m, nn.Conv2d))
    twin.patch_embed.proj.load_state_dict(conv.state_dict())
    grid = twin.patch_embed.grid_size[0] * twin.patch_embed.grid_size[1]
    table = getattr(embeddings, "position_embeddings", None)  # ViT, DINOv2: a parameter
    if table is None:
        table = embeddings.position_embedding.weight[None]  # CLIP: an embedding table
    blank = table.new_zeros(1, grid + 1, table.shape[-1])
    positions = embeddings.interpolate_pos_encoding(blank, input_size, input_size)  # HF's own resampling
    cls_token = getattr(embeddings, "cls_token", None)
    if cls_token is None:
        cls_token = embeddings.class_embedding.view(1, 1, -1)
    twin.cls_token.copy_(cls_token + positions[:, :1])
    twin.pos_embed.copy_(positions[:, 1:])
    if twin.reg_token is not None:
        twin.reg_token.copy_(embeddings.register_tokens)


def _linears(layer: nn.Module) -> dict[str | None, nn.Linear]:
    return {_role(sub): module for sub, module in layer.named_modules() if isinstance(module, nn.Linear)}


def _copy_layer(block: nn.Module, layer: nn.Module, name: str) -> None:
    """One pre-norm layer by role (the names differ between transformers versions, the roles do not)."""
    linears = _linears(layer)
    norms = [module for module in layer.modules() if is_norm(module)]
    scales = [module for module in layer.modules() if "LayerScale" in type(module).__name__]
    gated = isinstance(block.mlp, SwiGLU)
    roles = {"q", "k", "v", "out", "fc1", "fc2"} | ({"gate"} if gated else set())
    if not roles <= set(linears) or ("gate" in linears) != gated or len(norms) != 2:
        raise UnsupportedModelError(f"{name} ({type(layer).__name__}) is not a pre-norm ViT layer")
    q, k, v = linears["q"], linears["k"], linears["v"]
    block.attn.qkv.weight.copy_(torch.cat([q.weight, k.weight, v.weight]))
    if block.attn.qkv.bias is not None:
        block.attn.qkv.bias.copy_(torch.cat([q.bias, k.bias, v.bias]))
    block.attn.proj.load_state_dict(linears["out"].state_dict())
    block.norm1.load_state_dict(norms[0].state_dict())
    block.norm2.load_state_dict(norms[1].state_dict())
    if gated:  # down(silu(gate(x)) · up(x)): timm's SwiGLU, fc1_g the gate
        block.mlp.fc1_g.load_state_dict(linears["gate"].state_dict())
        block.mlp.fc1_x.load_state_dict(linears["fc1"].state_dict())
    else:
        block.mlp.fc1.load_state_dict(linears["fc1"].state_dict())
    block.mlp.fc2.load_state_dict(linears["fc2"].state_dict())
    for gamma, scale in zip((block.ls1, block.ls2), scales, strict=False):
        gamma.gamma.copy_(layer_scale(scale, name))
