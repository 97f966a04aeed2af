"""Per-patch attention scores and bag predictions, for bags of any size.

`infer_bag` runs a model's embedding and attention layers over the patches in chunks (65,536 rows
by default) under ``torch.inference_mode()`` and pools with an online, numerically stable softmax:
it keeps a running maximum, a running sum of exp(A - max) and a running exp-weighted sum of the
embeddings per branch, rescaling them when the maximum grows. So no (N, H) embedding buffer is ever
kept (only one chunk's), and a 10^6-patch bag needs little more memory than its features. The
features may stay on the CPU while the model is on a GPU: chunks are moved one at a time.

`attention_scores` gives one branch's scores as a numpy vector: ``raw`` (pre-softmax, CLAM's
``A_raw``), ``softmax`` (the pooling weights) or ``percentile`` (rank / N with average ties, as
CLAM's heatmaps and `attnmap.render.normalize`). CLAM_MB defaults to the predicted class's branch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from attnmap.errors import InputError
from attnmap.mil.base import AttentionMILBase, FeatureRows, check_bag_shape
from attnmap.model_state import eval_mode
from attnmap.render import normalize

ScoreKind = Literal["raw", "softmax", "percentile"]
SCORE_KINDS: tuple[str, ...] = ("raw", "softmax", "percentile")
DEFAULT_CHUNK = 65_536


@dataclass
class BagAttention:
    """A bag's raw attention (K, N) and prediction, as numpy arrays (the model's float dtype)."""

    raw: np.ndarray
    logits: np.ndarray
    probs: np.ndarray
    prediction: int

    def branch_for(self, branch: int | None = None) -> int:
        """The branch to report: the given one, else the predicted class's (MB) or the only one (SB)."""
        n_branches = self.raw.shape[0]
        if branch is None:
            return self.prediction if n_branches > 1 else 0
        if not 0 <= int(branch) < n_branches:
            raise InputError(
                f"branch {branch} is out of range: the model has {n_branches} attention branch(es)"
            )
        return int(branch)

    def scores(self, kind: ScoreKind = "raw", branch: int | None = None) -> np.ndarray:
        """One branch's scores (N,) as raw, softmax or percentile values."""
        return convert_scores(self.raw[self.branch_for(branch)], kind)


def convert_scores(raw: np.ndarray, kind: ScoreKind) -> np.ndarray:
    """Raw attention logits (N,) -> the requested kind of score."""
    if kind not in SCORE_KINDS:
        raise InputError(f"unknown score kind {kind!r}; choose one of {list(SCORE_KINDS)}")
    if kind == "raw":
        return raw.copy()
    if kind == "softmax":
        shifted = np.exp(raw - raw.max())
        return shifted / shifted.sum()
    return normalize(raw, "percentile")


def _check_model(model: torch.nn.Module) -> AttentionMILBase:
    if not isinstance(model, AttentionMILBase):
        raise InputError(
            f"expected an attnmap.mil model (ABMIL, CLAM_SB, CLAM_MB), got {type(model).__name__}"
        )
    return model


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A model output as numpy: half precision (bfloat16 and float16 checkpoints) is widened to
    float32, so every score of a bag has one dtype whichever method made it (bfloat16 has no numpy
    twin, and percentiles or sums of float16 scores would lose what the map shows); float32 and
    float64 are kept."""
    from attnmap.render.arrays import as_array

    return as_array(tensor)


def infer_bag(
    model: AttentionMILBase,
    features: torch.Tensor | np.ndarray | FeatureRows,
    chunk_size: int = DEFAULT_CHUNK,
    progress: bool = False,
) -> BagAttention:
    """Raw attention (K, N), logits, probabilities and prediction of one bag, in chunks.

    Equals the model's forward (up to float rounding of the chunked softmax) whatever the bag size.
    ``features`` may be rows still in their file (`attnmap.mil.bag_stream.open_bag`): they are read
    one chunk at a time. ``progress`` shows a bar over the chunks when there are several.
    The model is used in eval mode; its training flag is restored afterwards.
    """
    model = _check_model(model)
    # an integer, strictly: 1.5 or "64" failed later with a bare TypeError (as explain refuses them)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise InputError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if isinstance(features, np.ndarray):
        features = torch.from_numpy(features)
    # values are checked chunk by chunk (model.check_features), so only the shape here
    features = check_bag_shape(features)
    with eval_mode(model), torch.inference_mode():  # every module's own flag restored after
        raw, pooled = _chunked_pool(model, features, chunk_size, progress)
        logits = model.classify(pooled)
        probs = torch.softmax(logits, dim=1)
    return BagAttention(
        raw=to_numpy(raw),
        logits=to_numpy(logits[0]),
        probs=to_numpy(probs[0]),
        prediction=int(logits[0].argmax()),
    )


def _chunked_pool(
    model: AttentionMILBase, features: torch.Tensor | FeatureRows, chunk_size: int, progress: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    from tqdm.auto import tqdm

    device, dtype = model.device, model.parameter_dtype
    n_patches, n_branches = features.shape[0], model.n_branches
    raw = torch.empty(n_branches, n_patches, dtype=dtype, device=device)
    running_max = torch.full((n_branches, 1), -torch.inf, dtype=dtype, device=device)
    running_sum = torch.zeros(n_branches, 1, dtype=dtype, device=device)
    weighted = torch.zeros(n_branches, model.hidden_dim, dtype=dtype, device=device)
    starts = range(0, n_patches, chunk_size)
    bar = tqdm(starts, desc="chunks", unit="chunk", leave=False, disable=not progress or len(starts) < 2)
    for start in bar:
        chunk = model.check_features(features[start : start + chunk_size])
        h = model.embed(chunk)
        logits = model.attention_logits(h).t()  # (K, n)
        raw[:, start : start + chunk.shape[0]] = logits
        new_max = torch.maximum(running_max, logits.max(dim=1, keepdim=True).values)
        rescale = torch.exp(running_max - new_max)
        exp_logits = torch.exp(logits - new_max)
        running_sum = running_sum * rescale + exp_logits.sum(dim=1, keepdim=True)
        weighted = weighted * rescale + exp_logits @ h
        running_max = new_max
    return raw, weighted / running_sum


def attention_scores(
    model: AttentionMILBase,
    features: torch.Tensor | np.ndarray,
    kind: ScoreKind = "raw",
    branch: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> np.ndarray:
    """Per-patch attention (N,) of one branch: ``raw``, ``softmax`` or ``percentile``.

    ``branch=None`` picks the only branch (SB, ABMIL) or the predicted class's branch (CLAM_MB),
    as CLAM's heatmap script does.
    """
    if kind not in SCORE_KINDS:
        raise InputError(f"unknown score kind {kind!r}; choose one of {list(SCORE_KINDS)}")
    return infer_bag(model, features, chunk_size=chunk_size).scores(kind, branch)
