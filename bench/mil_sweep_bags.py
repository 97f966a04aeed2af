"""mil_sweep section: bags as files (h5, .pt; CLAM, TRIDENT layouts) and as arrays."""

from __future__ import annotations

import time
from pathlib import Path

import h5py
import numpy as np
import torch
from mil_sweep_harness import (
    D,
    case,
    check,
    perturbed,
    rng_features,
)

from attnmap.mil import (
    CLAM_MB,
    RELEVANCE_METHODS,
    explain,
    infer_bag,
    read_bag,
    write_h5_bag,
)


# ------------------------------------------------------------------------------------------ bags
def sweep_bags(tmp: Path) -> None:
    torch.manual_seed(2)
    model = perturbed(CLAM_MB(n_classes=3, embed_dim=D))
    folder = tmp / "bags"
    folder.mkdir(exist_ok=True)

    def read_and_run(path: Path, n: int, with_coords: bool) -> None:
        bag = read_bag(path)
        check(bag.features.shape == (n, D), f"features {tuple(bag.features.shape)}")
        check(bag.features.dtype == torch.float32, f"features dtype {bag.features.dtype}")
        check((bag.coords is not None) == with_coords, "coords presence")
        if with_coords:
            check(bag.coords.shape == (n, 2), f"coords {bag.coords.shape}")
        result = infer_bag(model, bag.features)
        check(result.raw.shape == (3, n) and np.isfinite(result.raw).all(), "attention shape/finite")
        for method in RELEVANCE_METHODS:
            if method == "occlusion" and n < 2:
                continue
            scores = explain(model, bag.features, method)
            check(scores.shape == (n,) and np.isfinite(scores).all(), f"{method} map")

    for n in (1, 2, 7):
        f = rng_features(n)
        path = write_h5_bag(folder / f"h5_{n}.h5", f, np.arange(2 * n).reshape(n, 2) * 256)
        case("bags", f"h5 with {n} patch(es)", lambda p=path, n=n: read_and_run(p, n, True))
    f = rng_features(5)
    case("bags", "h5 without coords", lambda: read_and_run(write_h5_bag(folder / "nocoords.h5", f), 5, False))
    with h5py.File(folder / "short_coords.h5", "w") as handle:
        handle["features"] = f
        handle["coords"] = np.zeros((4, 2), np.int64)
    case("bags", "coords of another length", lambda: read_bag(folder / "short_coords.h5"), "error")
    with h5py.File(folder / "fp16.h5", "w") as handle:
        handle["features"] = f.astype(np.float16)
        handle["coords"] = np.zeros((5, 2), np.int64)
    case("bags", "h5 float16 features", lambda: read_and_run(folder / "fp16.h5", 5, True))
    with h5py.File(folder / "extra.h5", "w") as handle:
        handle["features"] = f
        handle["coords"] = np.zeros((5, 2), np.int64)
        handle["annotations"] = np.ones(5)
        handle.create_group("meta")["x"] = 1
        handle["coords"].attrs["patch_size"] = 256
    case("bags", "h5 with extra datasets", lambda: read_and_run(folder / "extra.h5", 5, True))
    with h5py.File(folder / "trident.h5", "w") as handle:  # TRIDENT: float coords with attributes
        handle["features"] = f
        coords = handle.create_dataset("coords", data=np.arange(10).reshape(5, 2).astype(np.float64) * 224)
        coords.attrs["patch_size_level0"] = 224
        coords.attrs["patch_size"] = 224
        coords.attrs["level0_magnification"] = 40
    case(
        "bags", "TRIDENT layout (float coords + attrs)", lambda: read_and_run(folder / "trident.h5", 5, True)
    )
    with h5py.File(folder / "batched.h5", "w") as handle:  # (1, N, D) as some extractors write
        handle["features"] = f[None]
        handle["coords"] = np.zeros((1, 5, 2), np.int64)
    case(
        "bags",
        "h5 (1, N, D) features and (1, N, 2) coords",
        lambda: read_and_run(folder / "batched.h5", 5, True),
        "ok",
    )
    for name, values in (("nan", np.nan), ("inf", np.inf)):
        bad = f.copy()
        bad[2, 3] = values
        path = write_h5_bag(folder / f"{name}.h5", bad, np.zeros((5, 2)))
        case("bags", f"{name} feature", lambda p=path: read_bag(p), "error")
        case("bags", f"{name} feature straight to explain", lambda b=bad: explain(model, b, "lrp"), "error")
        case("bags", f"{name} feature straight to infer_bag", lambda b=bad: infer_bag(model, b), "error")
    with h5py.File(folder / "empty.h5", "w") as handle:
        handle["features"] = np.zeros((0, D), np.float32)
    case("bags", "empty bag (h5)", lambda: read_bag(folder / "empty.h5"), "error")
    case("bags", "empty bag to explain", lambda: explain(model, np.zeros((0, D), np.float32)), "error")
    case("bags", "empty bag to infer_bag", lambda: infer_bag(model, np.zeros((0, D), np.float32)), "error")
    case("bags", "1-D features to explain", lambda: explain(model, np.zeros(D, np.float32)), "error")
    case("bags", "features of another width", lambda: infer_bag(model, rng_features(4, D + 1)), "error")
    case(
        "bags",
        "integer features (h5)",
        lambda: read_bag(write_h5_bag(folder / "ints.h5", np.ones((3, D)))),
        "any",
    )
    with h5py.File(folder / "int.h5", "w") as handle:
        handle["features"] = np.ones((3, D), np.int32)
    case("bags", "int32 features", lambda: read_bag(folder / "int.h5"), "error")
    with h5py.File(folder / "nofeat.h5", "w") as handle:
        handle["feats"] = f
    case("bags", "h5 without 'features'", lambda: read_bag(folder / "nofeat.h5"), "error")
    (folder / "junk.h5").write_bytes(b"junk")
    case("bags", "h5 that is not h5", lambda: read_bag(folder / "junk.h5"), "error")
    torch.save(torch.from_numpy(f), folder / "tensor.pt")
    case("bags", ".pt tensor", lambda: read_and_run(folder / "tensor.pt", 5, False))
    torch.save({"features": torch.from_numpy(f), "coords": torch.zeros(5, 2)}, folder / "dict.pt")
    case("bags", ".pt dict with coords", lambda: read_and_run(folder / "dict.pt", 5, True))
    torch.save({"feats": torch.from_numpy(f)}, folder / "dict_nofeat.pt")
    case("bags", ".pt dict without 'features'", lambda: read_bag(folder / "dict_nofeat.pt"), "error")
    torch.save(torch.from_numpy(f).bfloat16(), folder / "bf16.pt")
    case("bags", ".pt bfloat16", lambda: read_and_run(folder / "bf16.pt", 5, False))
    torch.save(torch.from_numpy(f).half(), folder / "fp16.pt")
    case("bags", ".pt float16", lambda: read_and_run(folder / "fp16.pt", 5, False))
    torch.save(f, folder / "numpy.pt")
    case("bags", ".pt numpy array", lambda: read_bag(folder / "numpy.pt"), "any")
    torch.save({"features": torch.from_numpy(f), "coords": torch.zeros(3, 2)}, folder / "dict_short.pt")
    case("bags", ".pt coords of another length", lambda: read_bag(folder / "dict_short.pt"), "error")
    torch.save(torch.zeros(2, 5, D), folder / "3d.pt")
    case("bags", ".pt (2, N, D)", lambda: read_bag(folder / "3d.pt"), "error")
    (folder / "empty.pt").write_bytes(b"")
    case("bags", "empty .pt file", lambda: read_bag(folder / "empty.pt"), "error")
    case(
        "bags",
        "unknown suffix",
        lambda: read_bag(Path(write_h5_bag(folder / "x.h5", f)).rename(folder / "x.npy")),
        "error",
    )
    (folder / "dir.h5").mkdir(exist_ok=True)
    case("bags", "a directory named .h5", lambda: read_bag(folder / "dir.h5"), "error")
    case("bags", "a missing bag", lambda: read_bag(folder / "missing.h5"), "error")

    def huge() -> None:
        features = torch.from_numpy(rng_features(100_000, seed=5))
        start = time.perf_counter()
        result = infer_bag(model, features)
        elapsed = time.perf_counter() - start
        start = time.perf_counter()
        lrp = explain(model, features, "lrp")
        lrp_time = time.perf_counter() - start
        print(f"  100k-patch bag: infer_bag {elapsed:.2f} s, lrp {lrp_time:.2f} s", flush=True)
        check(np.isfinite(result.raw).all() and np.isfinite(lrp).all(), "non-finite on 100k patches")
        check(lrp.shape == (100_000,), "lrp shape")
        chunked = explain(model, features, "lrp", chunk_size=30_000)
        check(np.allclose(chunked, lrp, rtol=1e-4, atol=1e-7), "lrp depends on chunk size at 100k")

    case("bags", "100k patches", huge)
