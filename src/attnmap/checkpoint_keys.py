"""A checkpoint's key names as the model has them, where a training or export layout differs.

Why: the same weights are saved under other names by the code that trained or exported them, and
timm's checkpoint filter does not know every layout. Each renaming here is exact (the tensors are
the same numbers, only named or packed differently) and applies only when the model lacks the
layout the file uses, so a model that has it keeps its own names:

- DINOv2's FSDP block chunks: ``blocks.CHUNK.BLOCK.`` (the block index is global within a chunk)
  for a model with plain ``blocks.BLOCK.``;
- attention saved with separate query, key and value projections (``attn.q_proj`` / ``k_proj`` /
  ``v_proj``, or ``attn.q`` / ``k`` / ``v``) for a model with one packed ``attn.qkv`` (timm's
  layout: the three stacked in that order along the output dimension);
- a masked autoencoder's pixel decoder (MAE: ``decoder_embed``, ``decoder_blocks``, ``decoder_norm``,
  ``decoder_pred``, ``decoder_pos_embed``), a part used only in pre-training, left out for a model
  that has no decoder of its own (the encoder's weights are the rest of the file, as MAE's own
  fine-tuning loads them).
"""

from __future__ import annotations

import re

import torch

_CHUNKED_BLOCK = re.compile(r"(^|\.)blocks\.\d+\.(\d+)\.")
_SPLIT_NAMES = (("q_proj", "k_proj", "v_proj"), ("q", "k", "v"))


def _is_decoder(key: str) -> bool:
    first = key.split(".", 1)[0]
    return first == "decoder" or first.startswith("decoder_")


def without_decoder(own: set[str], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without a pre-training decoder's keys when the model has none (see the module)."""
    if any(_is_decoder(key) for key in own):
        return state
    return {key: value for key, value in state.items() if not _is_decoder(key)}


def unchunked_blocks(own: set[str], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with DINOv2's chunked block names as the model's plain ones (see the module)."""
    if any(_CHUNKED_BLOCK.search(key) for key in own) or not any(_CHUNKED_BLOCK.search(k) for k in state):
        return state
    return {_CHUNKED_BLOCK.sub(r"\1blocks.\2.", key, count=1): value for key, value in state.items()}


def joined_qkv(own: set[str], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with separate q/k/v projections packed into the model's ``qkv`` where it lacks it
    and all three parts are there (see the module)."""
    joined = dict(state)
    for key in own:
        stem, dot, kind = key.rpartition(".qkv.")
        if not dot or key in state:
            continue
        for names in _SPLIT_NAMES:
            parts = [f"{stem}.{name}.{kind}" for name in names]
            if all(isinstance(state.get(part), torch.Tensor) for part in parts):
                shapes = {tuple(state[part].shape[1:]) for part in parts}
                if len(shapes) == 1:
                    joined[key] = torch.cat([state[part] for part in parts])
                    for part in parts:
                        joined.pop(part)
                break
    return joined
