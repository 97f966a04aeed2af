"""Attention MIL: ABMIL and CLAM-SB/MB that load CLAM checkpoints, training, attention export.

Models (features (N, D) -> `MILOutput` with logits, probs, prediction, pre-softmax attention (K, N),
pooled (K, 512) and, for CLAM with ``instance_eval=True``, the instance clustering loss)::

    from attnmap.mil import load_clam, attention_scores
    model = load_clam("s_0_checkpoint.pt")            # SB/MB, classes, size, gate, embed_dim inferred
    out = model(features, label=1, instance_eval=True)
    scores = attention_scores(model, features, kind="percentile")   # (N,) numpy, any bag size

Bags: `read_bag(path)` reads CLAM's ``h5_files/<slide>.h5`` (``features`` + ``coords``) or
``pt_files/<slide>.pt``; `find_bag(features_dir, slide_id)` locates one.

Relevance beyond attention (`explain`, `feature_gradients`; see docs/mil-relevance.md)::

    scores = explain(model, features, method="lrp")   # attention, gradient_x_input,
                                                      # integrated_gradients, lrp, occlusion

Attention export: `export_attention(model, bag, out_dir)` writes ``<slide>_attention.h5`` (coords,
raw / softmax / percentile scores per branch, prediction, probabilities, provenance) and a CSV.

Training (also ``attnmap mil train``)::

    from attnmap.mil import train_mil
    summary = train_mil("features/", "labels.csv", "runs/clam", model="clam_sb", folds=5,
                        max_epochs=200, lr=2e-4, weight_decay=1e-5, bag_weight=0.7, k_sample=8,
                        early_stopping=True, weighted_sample=False, seed=1)

``labels.csv`` has ``slide_id,label[,case_id]``; folds are stratified by label and grouped by case.
Each fold writes ``fold_<i>/checkpoint.pt`` (a CLAM-style state_dict, loadable by `load_clam` /
`load_mil`), ``fold_<i>/metrics.json`` and per-epoch resume state; the run writes ``metrics.csv``
(AUC, accuracy, per-class accuracy for each fold plus the mean). Re-running the same command
resumes an interrupted fold and skips finished ones. `train_mil` returns the metrics rows.
"""

from attnmap.mil.abmil import ABMIL
from attnmap.mil.attention import AttentionNet, GatedAttentionNet
from attnmap.mil.bags import Bag, find_bag, list_bags, read_bag, write_h5_bag
from attnmap.mil.base import AttentionMILBase, MILOutput
from attnmap.mil.checkpoint import load_clam, load_mil, read_state_dict
from attnmap.mil.clam import CLAM_MB, CLAM_SB
from attnmap.mil.explain import METHODS as RELEVANCE_METHODS
from attnmap.mil.explain import explain, feature_gradients
from attnmap.mil.export import AttentionExport, export_attention, write_predictions_csv
from attnmap.mil.metrics import classification_metrics, roc_auc
from attnmap.mil.scores import BagAttention, attention_scores, infer_bag
from attnmap.mil.splits import make_folds, read_labels
from attnmap.mil.train import TrainConfig, train_mil

__all__ = [
    "ABMIL",
    "CLAM_MB",
    "CLAM_SB",
    "AttentionExport",
    "AttentionMILBase",
    "AttentionNet",
    "Bag",
    "BagAttention",
    "GatedAttentionNet",
    "MILOutput",
    "RELEVANCE_METHODS",
    "TrainConfig",
    "attention_scores",
    "classification_metrics",
    "explain",
    "export_attention",
    "feature_gradients",
    "find_bag",
    "infer_bag",
    "list_bags",
    "load_clam",
    "load_mil",
    "make_folds",
    "read_bag",
    "read_labels",
    "read_state_dict",
    "roc_auc",
    "train_mil",
    "write_h5_bag",
    "write_predictions_csv",
]
