"""mil_sweep section: every relevance method, target and check; odd bags; export; patch flipping."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import torch
from mil_sweep_harness import (
    D,
    bias_free,
    case,
    check,
    clone,
    perturbed,
    rng_features,
)

from attnmap.mil import (
    ABMIL,
    CLAM_MB,
    CLAM_SB,
    RELEVANCE_METHODS,
    explain,
    feature_gradients,
    infer_bag,
)
from attnmap.mil.explain import PER_FEATURE_METHODS


def sweep_explain(tmp: Path) -> None:
    features = rng_features(13, seed=3)
    torch.manual_seed(3)
    models = {
        "CLAM_SB-c2": perturbed(CLAM_SB(n_classes=2, embed_dim=D)),
        "CLAM_SB-c4-plain": perturbed(CLAM_SB(n_classes=4, embed_dim=D, gate=False, size="big")),
        "CLAM_MB-c3": perturbed(CLAM_MB(n_classes=3, embed_dim=D)),
        "CLAM_MB-c5-plain-drop": perturbed(CLAM_MB(n_classes=5, embed_dim=D, gate=False, dropout=0.25)),
        "ABMIL-c3": perturbed(ABMIL(embed_dim=D, hidden_dim=64, attention_dim=16, n_classes=3)),
    }
    for key, model in models.items():
        c = model.n_classes
        reference = infer_bag(model, features)
        for method in RELEVANCE_METHODS:
            for target in (None, 0, c - 1, c, -1, 1.5, True):
                expect = (
                    "ok"
                    if target is None
                    or (isinstance(target, int) and not isinstance(target, bool) and 0 <= target < c)
                    else "error"
                )

                def run(model=model, method=method, target=target, reference=reference, expect=expect):
                    model.train()  # dropout on: explain must switch it off and restore the flag
                    first = explain(model, features, method, target)
                    if expect == "error":  # it should have raised; the checks below need a class index
                        return
                    check(model.training, "training flag not restored")
                    model.eval()
                    check(first.shape == (13,), f"shape {first.shape}")
                    check(np.isfinite(first).all(), "non-finite map")
                    second = explain(model, features, method, target)
                    check(np.array_equal(first, second), "not deterministic")
                    chunked = explain(model, features, method, target, chunk_size=4)
                    check(np.allclose(first, chunked, rtol=1e-4, atol=1e-6), "depends on chunk size")
                    cls = reference.prediction if target is None else target
                    branch = cls if isinstance(model, CLAM_MB) else 0
                    if method == "attention":
                        check(
                            np.allclose(first, reference.raw[branch], atol=1e-6), "not the branch's attention"
                        )
                    # one patch's score must not depend on which other bag it is in when the method
                    # is local (attention); for the others: permutation equivariance
                    order = np.random.default_rng(0).permutation(13)
                    permuted = explain(model, features[order], method, cls)
                    check(
                        np.allclose(permuted, first[order], rtol=1e-4, atol=1e-6),
                        "not permutation-equivariant",
                    )
                    if method == "occlusion":
                        brute = []
                        logit = float(infer_bag(model, features).logits[cls])
                        for i in range(13):
                            rest = np.delete(features, i, axis=0)
                            brute.append(logit - float(infer_bag(model, rest).logits[cls]))
                        check(np.allclose(first, brute, rtol=1e-3, atol=1e-5), "occlusion != leave-one-out")
                    if method in PER_FEATURE_METHODS:
                        per_feature = explain(model, features, method, target, per_feature=True)
                        check(per_feature.shape == (13, D), f"per-feature shape {per_feature.shape}")
                        check(
                            np.allclose(per_feature.sum(1), first, rtol=1e-4, atol=1e-5),
                            "per-feature rows do not sum to the patch scores",
                        )
                    if method == "integrated_gradients" and target is not None:
                        first = explain(model, features, method, target, steps=512)
                        zero = float(infer_bag(model, np.zeros_like(features)).logits[cls])
                        total = float(reference.logits[cls]) - zero
                        check(
                            abs(first.sum() - total) <= 0.01 * (abs(total) + 0.1),
                            f"IG completeness {first.sum():.4f} vs {total:.4f}",
                        )

                case("explain", f"{key} {method} target={target}", run, expect)

        def conservation(model=model):
            free = bias_free(clone(model)).double()
            x = torch.from_numpy(features).double()
            result = infer_bag(free, x)
            for cls in range(free.n_classes):
                total = explain(free, x, "lrp", cls, eps=0.0).sum()
                check(
                    math.isclose(total, float(result.logits[cls]), rel_tol=1e-6, abs_tol=1e-9),
                    f"class {cls}: Σ R = {total:.8f}, logit {result.logits[cls]:.8f}",
                )
            gx = (feature_gradients(free, x, 0, detach_attention=True) * x).sum(1).numpy()
            check(
                np.allclose(explain(free, x, "lrp", 0, eps=0.0), gx, rtol=1e-8, atol=1e-10),
                "LRP-0 != detached gradient x input",
            )

        case("explain", f"{key} lrp conservation (bias-free, eps=0, float64)", conservation)

        def dtypes(model=model):
            for dtype in (torch.float16, torch.bfloat16):
                low = clone(model).to(dtype)
                for method in RELEVANCE_METHODS:
                    scores = explain(low, features, method)
                    check(scores.shape == (13,) and np.isfinite(scores).all(), f"{dtype} {method}")
                    check(scores.dtype == np.float32, f"{dtype} {method} gives {scores.dtype}")

        case("explain", f"{key} float16/bfloat16 models", dtypes)
        case("explain", f"{key} unknown method", lambda m=model: explain(m, features, "gradcam"), "error")
        case(
            "explain",
            f"{key} attention per_feature",
            lambda m=model: explain(m, features, "attention", per_feature=True),
            "error",
        )
        case(
            "explain",
            f"{key} ig steps=0",
            lambda m=model: explain(m, features, "integrated_gradients", steps=0),
            "error",
        )
        case("explain", f"{key} lrp eps=-1", lambda m=model: explain(m, features, "lrp", eps=-1), "error")
        case(
            "explain",
            f"{key} lrp unknown option",
            lambda m=model: explain(m, features, "lrp", alpha=1),
            "error",
        )
        case("explain", f"{key} chunk_size=0", lambda m=model: explain(m, features, chunk_size=0), "error")
        case(
            "explain",
            f"{key} feature_gradients target=C",
            lambda m=model: feature_gradients(m, features, m.n_classes),
            "error",
        )
        case(
            "explain",
            f"{key} occlusion on 1 patch",
            lambda m=model: explain(m, features[:1], "occlusion"),
            "error",
        )
    odd_bags = {
        "identical patches": np.repeat(features[:1], 9, axis=0),
        "all-zero patches": np.zeros((9, D), np.float32),
        "huge values (1e4)": features[:9] * 1e4,
        "tiny values (1e-20)": features[:9] * 1e-20,
        "one dominant patch": np.concatenate([features[:8], features[8:9] * 200]),
    }
    for key, model in models.items():
        for bag_name, bag in odd_bags.items():
            for method in RELEVANCE_METHODS:

                def odd(model=model, bag=bag, method=method):
                    scores = explain(model, bag, method)
                    check(scores.shape == (9,) and np.isfinite(scores).all(), "non-finite or misshapen map")
                    result = infer_bag(model, bag)
                    check(np.isfinite(result.probs).all() and abs(result.probs.sum() - 1) < 1e-5, "probs")
                    for kind in ("softmax", "percentile"):
                        values = result.scores(kind)
                        check(np.isfinite(values).all(), f"{kind} not finite")
                    if method == "occlusion":
                        cls = result.prediction
                        brute = [
                            float(result.logits[cls])
                            - float(infer_bag(model, np.delete(bag, i, 0)).logits[cls])
                            for i in range(9)
                        ]
                        scale = max(1.0, float(np.abs(brute).max()))
                        check(
                            np.allclose(scores, brute, atol=1e-4 * scale, rtol=1e-3),
                            "occlusion != leave-one-out",
                        )

                case("explain", f"{key} {bag_name} {method}", odd)

        def local_attention(model=model):
            # the attention method is a per-patch function: a patch's score does not depend on its bag
            alone = explain(model, features[:5], "attention", 0)
            inside = explain(model, features, "attention", 0)[:5]
            check(np.allclose(alone, inside, atol=1e-6), "attention depends on the other patches")

        case("explain", f"{key} attention is batch-independent", local_attention)

    from attnmap.mil import export_attention

    exporter = models["CLAM_MB-c3"]
    out = tmp / "export"

    def export(**kwargs):
        return lambda: export_attention(
            exporter, kwargs.pop("bag", features), kwargs.pop("out", out), **kwargs
        )

    def export_checked():
        result = export_attention(exporter, features, out, slide_id="s", methods=RELEVANCE_METHODS, target=1)
        with h5py.File(result.h5_path) as handle:
            for method in RELEVANCE_METHODS:
                values = handle[f"scores_{method}"][()]
                check(
                    np.allclose(values, explain(exporter, features, method, 1), atol=1e-6),
                    f"{method} differs",
                )
            check(np.allclose(handle["attention_softmax"][()].sum(0), 1, atol=1e-5), "softmax columns")

    case("explain", "export every method", export_checked)
    case("explain", "export slide_id with a slash", export(slide_id="../escape"), "error")
    case("explain", "export slide_id non-ASCII", export(slide_id="Schnitt_ä_切片"))
    case("explain", "export without slide_id", export(), "error")
    case("explain", "export target out of range", export(slide_id="s", methods=("lrp",), target=3), "error")
    case("explain", "export coords of another length", export(slide_id="s", coords=np.zeros((3, 2))), "error")
    case("explain", "export unknown method", export(slide_id="s", methods=("saliency",)), "error")
    case(
        "explain",
        "export occlusion on 1 patch",
        export(slide_id="s", bag=features[:1], methods=("occlusion",)),
        "error",
    )
    case("explain", "export duplicated methods", export(slide_id="s", methods=("lrp", "lrp")))
    (tmp / "export_file").write_text("x")
    case("explain", "export out_dir is a file", export(slide_id="s", out=tmp / "export_file"), "error")

    from attnmap.evaluate import patch_flipping

    for key, model in models.items():
        for method in RELEVANCE_METHODS:

            def flipping(model=model, method=method):
                scores = explain(model, features, method)
                result = patch_flipping(model, features, scores)
                again = patch_flipping(model, features, scores)
                for name in ("auc_most_relevant_first", "auc_random"):
                    value = getattr(result, name)
                    check(np.isfinite(value) and 0 <= value <= 1, f"{name} = {value}")
                    check(value == getattr(again, name), f"{name} not deterministic")

            case("explain", f"{key} patch flipping of {method}", flipping)
        case(
            "explain",
            f"{key} patch flipping, 2 patches",
            lambda m=model: patch_flipping(m, features[:2], explain(m, features[:2], "lrp")),
            "any",
        )
        case(
            "explain",
            f"{key} patch flipping, 1 patch",
            lambda m=model: patch_flipping(m, features[:1], np.ones(1)),
            "error",
        )
        case(
            "explain",
            f"{key} patch flipping, NaN scores",
            lambda m=model: patch_flipping(m, features, np.full(13, np.nan)),
            "error",
        )
        case(
            "explain",
            f"{key} patch flipping, target 1.5",
            lambda m=model: patch_flipping(m, features, np.arange(13.0), target=1.5),
            "error",
        )
        case(
            "explain",
            f"{key} patch flipping, scores of another length",
            lambda m=model: patch_flipping(m, features, np.arange(12.0)),
            "error",
        )

    sb = models["CLAM_SB-c2"]
    x64 = features.astype(np.float64)
    case(
        "explain",
        "float64 numpy features, float32 model",
        lambda: check(
            np.allclose(explain(sb, x64, "lrp"), explain(sb, features, "lrp"), atol=1e-5), "differs"
        ),
    )
    case(
        "explain",
        "non-contiguous features",
        lambda: check(
            np.allclose(explain(sb, np.asfortranarray(features), "lrp"), explain(sb, features, "lrp")),
            "differs",
        ),
    )
    grad_x = torch.from_numpy(features).requires_grad_(True)
    case(
        "explain",
        "features that require grad",
        lambda: check(
            np.allclose(explain(sb, grad_x, "gradient_x_input"), explain(sb, features, "gradient_x_input")),
            "differs",
        ),
    )
    case("explain", "features as a list", lambda: explain(sb, features.tolist(), "lrp"), "any")
    case("explain", "features (1, N, D)", lambda: explain(sb, features[None], "lrp"), "any")
    case(
        "explain",
        "feature_gradients shape",
        lambda: check(tuple(feature_gradients(sb, features).shape) == features.shape, "shape"),
    )
    case(
        "explain",
        "integer target as numpy int64",
        lambda: check(
            np.allclose(explain(sb, features, "lrp", np.int64(1)), explain(sb, features, "lrp", 1)), "differs"
        ),
    )
    from attnmap.mil import attention_scores

    mb = models["CLAM_MB-c3"]
    for kind in ("raw", "softmax", "percentile"):
        for branch in (None, 0, 2, 3, -1):

            def scores(kind=kind, branch=branch):
                values = attention_scores(mb, features, kind=kind, branch=branch)
                check(values.shape == (13,) and np.isfinite(values).all(), "map")
                if kind == "softmax":
                    check(abs(values.sum() - 1) < 1e-5, f"softmax sums to {values.sum()}")
                if kind == "percentile":
                    check(values.min() >= 0 and values.max() <= 100, "percentile range")

            case(
                "explain",
                f"attention_scores {kind} branch={branch}",
                scores,
                "ok" if branch in (None, 0, 2) else "error",
            )
    case("explain", "a torch Linear as model", lambda: explain(torch.nn.Linear(D, 2), features), "error")
