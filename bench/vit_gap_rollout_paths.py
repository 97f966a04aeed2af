"""Where attention rollout's pointing game goes on an average-pooled ViT: the rollout split by paths.

`vit_gap_pointing.py` finds `rollout` further below the CLS model than the other methods. This script
takes the rollout qJ (J = M̂_{L−1}⋯M̂_0, M̂ = D(M + I), D = 1/rowsum) of both shapes ViTs apart, on
the same images (docs/average_pooling.md, "Why rollout stays below"):

- the identity path q ⊙ Π d_l: its share of the map's mass and how uneven it is over the patches
  (when attention rows sum to 1 it is q / 2^L, uniform, and removing it cannot move a peak);
- the pointing game of qJ with the identity path removed (attnmap's `rollout`), kept, and with the
  whole "own token" share q ⊙ diag(J) removed (every path that ends on the token it started from);
- the pointing game of each path order alone: the sum of the paths that take exactly k attention
  steps (and L − k residual steps), k = 1..L.

    python bench/vit_gap_rollout_paths.py --gap-weights /tmp/shapes_gap.safetensors --n 200
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from vit_gap_pointing import gap_model

import attnmap
from attnmap.data.shapes import ShapesDataset
from attnmap.data.shapes_model import load_shapes_vit
from attnmap.evaluate.maps import maps_to_pixels
from attnmap.evaluate.pointing import pointing_hits
from attnmap.vit.capture import capture
from attnmap.vit.methods.rollout import fuse_heads


def path_maps(
    model: torch.nn.Module, images: torch.Tensor
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Patch maps (B, gh, gw) of the rollout variants and path orders; identity-path statistics."""
    captured = capture(model, images, reduce=fuse_heads)
    attentions = captured.attention_list()
    query = captured.query_weights(attentions[0])
    batch, tokens = query.shape
    eye = torch.eye(tokens, dtype=query.dtype)
    orders = [query] + [torch.zeros_like(query) for _ in attentions]  # orders[k]: k attention steps
    own = eye.expand(batch, tokens, tokens).clone()  # J, to read its diagonal
    for attention in reversed(attentions):
        scale = 1.0 / (attention + eye).sum(dim=-1)  # d_l per token
        moved = [torch.bmm((row * scale).unsqueeze(1), attention).squeeze(1) for row in orders]
        orders = [orders[0] * scale] + [orders[k] * scale + moved[k - 1] for k in range(1, len(orders))]
        own = torch.bmm(own, (attention + eye) * scale.unsqueeze(-1))
    rollout = sum(orders)
    identity = orders[0]
    prefix = captured.num_prefix_tokens
    maps = {
        "rollout (identity path removed: attnmap)": rollout - identity,
        "rollout, identity path kept": rollout,
        "rollout, own-token share q ⊙ diag(J) removed": rollout - query * torch.diagonal(own, dim1=1, dim2=2),
    }
    maps.update({f"paths with {k} attention step(s) only": orders[k] for k in range(1, len(orders))})
    library = attnmap.explain(model, images, "rollout").flatten(1)
    assert torch.allclose(library, maps["rollout (identity path removed: attnmap)"][:, prefix:], atol=1e-6)
    patch_identity = identity[:, prefix:]
    stats = {
        "identity path's share of the patch mass": float(
            (patch_identity.sum(1) / rollout[:, prefix:].sum(1)).mean()
        ),
        "identity path max/min over patches": float(
            (patch_identity.amax(1) / patch_identity.amin(1).clamp_min(1e-30)).max()
        ) if patch_identity.abs().sum() > 0 else float("nan"),
    }
    grid = captured.grid_size
    return {name: values[:, prefix:].reshape(batch, *grid) for name, values in maps.items()}, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gap-weights", type=Path, default=None,
                        help="trained GAP weights (.safetensors); trained and written there if missing")
    parser.add_argument("--n", type=int, default=200, help="held-out images (seed-1 stream)")
    args = parser.parse_args()
    data = ShapesDataset(args.n, seed=1)
    models = {"CLS": load_shapes_vit(), "GAP": gap_model(args.gap_weights)}
    hits: dict[str, dict[str, list[bool]]] = {name: {} for name in models}
    stats: dict[str, list[dict[str, float]]] = {name: [] for name in models}
    for start in range(0, args.n, 50):
        images, masks = data.images[start : start + 50], data.masks[start : start + 50]
        for name, model in models.items():
            maps, batch_stats = path_maps(model, images)
            stats[name].append(batch_stats)
            for variant, values in maps.items():
                found = pointing_hits(maps_to_pixels(values, tuple(images.shape[-2:])), masks)
                hits[name].setdefault(variant, []).extend(found.tolist())
    print(f"n = {args.n} images of the seed-1 stream; pointing game %")
    print("| rollout variant | CLS model % | GAP model % | GAP − CLS |\n|---|---|---|---|")
    for variant in hits["CLS"]:
        cls_score, gap_score = (100.0 * np.mean(hits[name][variant]) for name in ("CLS", "GAP"))
        print(f"| {variant} | {cls_score:.1f} | {gap_score:.1f} | {gap_score - cls_score:+.1f} |")
    for name, parts in stats.items():
        share = np.mean([part["identity path's share of the patch mass"] for part in parts])
        spreads = [part["identity path max/min over patches"] for part in parts]
        if np.isnan(spreads).all():
            print(f"{name}: no identity path on the patches (the query is a prefix token)")
            continue
        print(f"{name}: identity path = {share:.4f} of the patch mass; "
              f"its max/min over patches {np.nanmax(spreads):.6f}")


if __name__ == "__main__":
    main()
