"""What CLAM's own scripts do for one slide, re-created step by step for `wsi_run.py`'s baseline.

`attnmap wsi run` with ``heatmap.overlap`` > 0 makes what a CLAM user gets from three scripts run in
turn: ``create_patches_fp.py --seg --patch`` (tissue, patch coordinates), ``extract_features_fp.py``
(features for training and classification) and ``create_heatmaps.py`` (prediction, attention,
heatmap on an overlapping grid). This module does, in order, what those scripts' code does on a CPU
(CLAM's loaders then get no worker processes and no pinned memory) or on CUDA (8 loader processes per
loader, pinned memory for extract_features_fp's), so that the time it takes stands for theirs. Each
step's docstring names the CLAM file whose behaviour it reproduces; bench/README.md lists them. It is
written from facts read in CLAM's code (loader settings, which grids are encoded, how the heatmap is
drawn and blended, what is written); none of CLAM's code is copied.

Where CLAM computes the same thing as an attnmap function (tissue segmentation, the patch grid
of its contour checks, the encoder network and the CLAM network), the attnmap function is used:
they are at least as fast as CLAM's (the patch grid is vectorised where CLAM checks points one by
one), so the baseline can only be faster than CLAM's scripts, never slower. Optional steps CLAM's
scripts skip by default or that attnmap does not make (stitching, ROI sampling) are left out.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from clam_drawing import rgb_region, vis_heatmap, vis_wsi

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ClamRun:
    """Seconds per step, patches through the encoder per step, and the grids' coordinates."""

    seconds: dict[str, float] = field(default_factory=dict)
    encoded: dict[str, int] = field(default_factory=dict)
    block: np.ndarray | None = None
    overlap: np.ndarray | None = None
    overlap_raw: np.ndarray | None = None

    def timed(self, name: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


# ------------------------------------------------------------------------------------ files
def append_h5(path: Path, arrays: dict[str, np.ndarray], mode: str) -> None:
    """utils/file_utils.py save_hdf5: open the file, create chunked (32 rows) resizable datasets on
    the first call, else grow each dataset and write the new rows at its end; close it again."""
    with h5py.File(path, mode) as handle:
        for key, value in arrays.items():
            if key not in handle:
                handle.create_dataset(
                    key, data=value, maxshape=(None,) + value.shape[1:], chunks=(32,) + value.shape[1:]
                )
            else:
                dataset = handle[key]
                dataset.resize(len(dataset) + len(value), axis=0)
                dataset[-len(value) :] = value


def eval_transforms(size: int) -> Any:
    """utils/transform_utils.py get_eval_transforms: Resize(size), ToTensor, Normalize, on a PIL image."""
    from torchvision import transforms

    return transforms.Compose(
        [transforms.Resize(size), transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )


# ------------------------------------------------------------------------------------ features
def feature_loader_options(device: torch.device) -> dict[str, Any]:
    """extract_features_fp.py: ``{'num_workers': 8, 'pin_memory': True}`` on CUDA, ``{}`` otherwise."""
    return _processes({"num_workers": 8, "pin_memory": True}) if device.type == "cuda" else {}


def simple_loader_options(device: torch.device) -> dict[str, Any]:
    """utils/utils.py get_simple_loader as heatmap_utils' compute_from_patches calls it
    (``num_workers=8``): 8 processes without pinned memory on CUDA, ``{}`` otherwise."""
    return _processes({"num_workers": 8, "pin_memory": False}) if device.type == "cuda" else {}


def _processes(options: dict[str, Any]) -> dict[str, Any]:
    """Loader processes forked, as on the Linux Pythons CLAM runs on (their datasets hold an open
    h5 file and slide, which a spawned process could not receive)."""
    return {**options, "multiprocessing_context": "fork"}


class CoordsBag(torch.utils.data.Dataset):
    """dataset_modules/dataset_h5.py Whole_Slide_Bag_FP: the patches file held open, one coordinate
    read from it per item, read_region + convert('RGB') + the eval transforms; a dict per item."""

    def __init__(self, coords_h5: Path, slide: Any, transforms: Any) -> None:
        self.handle = h5py.File(coords_h5, "r")
        self.level = int(self.handle["coords"].attrs["patch_level"])
        self.size = int(self.handle["coords"].attrs["patch_size"])
        self.length = len(self.handle["coords"])
        self.slide, self.transforms = slide, transforms

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        coord = self.handle["coords"][index]
        image = rgb_region(self.slide, (int(coord[0]), int(coord[1])), self.level, (self.size, self.size))
        return {"img": self.transforms(image), "coord": coord}


class RegionBag(torch.utils.data.Dataset):
    """dataset_modules/wsi_dataset.py Wsi_Region: read_region + convert('RGB') + transforms, unsqueezed."""

    def __init__(self, slide: Any, coords: np.ndarray, level: int, size: int, transforms: Any) -> None:
        self.slide, self.coords, self.level, self.size, self.transforms = (
            slide,
            coords,
            level,
            size,
            transforms,
        )

    def __len__(self) -> int:
        return len(self.coords)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, np.ndarray]:
        x, y = self.coords[index]
        image = rgb_region(self.slide, (int(x), int(y)), self.level, (self.size, self.size))
        return self.transforms(image).unsqueeze(0), self.coords[index]


def collate_mil(batch: list) -> list:
    """utils/utils.py collate_MIL (what get_simple_loader passes): images concatenated, the second
    fields as a LongTensor."""
    return [
        torch.cat([item[0] for item in batch], dim=0),
        torch.LongTensor(np.array([item[1] for item in batch])),
    ]


def extract_features_fp(
    slide: Any,
    coords_h5: Path,
    encoder: Any,
    transforms: Any,
    batch_size: int,
    feat_dir: Path,
    device: torch.device = torch.device("cpu"),
) -> Path:
    """extract_features_fp.py: a DataLoader over Whole_Slide_Bag_FP with no loader arguments on a CPU
    (patches read in the main thread between batches; on CUDA `feature_loader_options`), each batch
    moved to the device (non-blocking), encoded under inference_mode and appended to the h5; then
    the h5 read back and its features saved as the .pt."""
    dataset = CoordsBag(coords_h5, slide, transforms)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, **feature_loader_options(device))
    out = feat_dir / "h5_files" / coords_h5.name
    out.parent.mkdir(parents=True, exist_ok=True)
    mode = "w"
    for data in loader:
        with torch.inference_mode():
            features = encoder(data["img"].to(device, non_blocking=True)).cpu().numpy().astype(np.float32)
            append_h5(out, {"features": features, "coords": data["coord"].numpy().astype(np.int32)}, mode)
            mode = "a"
    dataset.handle.close()
    with h5py.File(out, "r") as handle:
        features = handle["features"][:]
    (feat_dir / "pt_files").mkdir(exist_ok=True)
    torch.save(torch.from_numpy(features), feat_dir / "pt_files" / f"{coords_h5.stem}.pt")
    return out


def compute_from_patches(
    slide: Any,
    coords: np.ndarray,
    level: int,
    size: int,
    encoder: Any,
    transforms: Any,
    batch_size: int,
    *,
    model: Any = None,
    branch: int = 0,
    ref_scores: np.ndarray | None = None,
    attn_path: Path | None = None,
    feat_path: Path | None = None,
    device: torch.device = torch.device("cpu"),
) -> np.ndarray | None:
    """vis_utils/heatmap_utils.py compute_from_patches: get_simple_loader (no workers on a CPU, on CUDA
    `simple_loader_options`) over Wsi_Region; per batch the patches moved to the device, the encoder,
    then (attention file asked) the raw attention of the predicted branch, each score turned into its
    percentile among ``ref_scores`` one by one (scipy percentileofscore), appended to the attention h5;
    (features file asked) the features appended to theirs. Returns the raw attention (before
    percentiles), for comparison only."""
    from scipy.stats import percentileofscore

    loader = torch.utils.data.DataLoader(
        RegionBag(slide, coords, level, size, transforms),
        batch_size=batch_size,
        sampler=torch.utils.data.SequentialSampler(range(len(coords))),
        collate_fn=collate_mil,
        **simple_loader_options(device),
    )
    mode, raw = "w", []
    for images, batch_coords in loader:
        batch_coords = batch_coords.numpy()
        with torch.inference_mode():
            features = encoder(images.to(device))
            if attn_path is not None:
                attention = model.attention_logits(model.embed(features))[:, branch].reshape(-1, 1)
                attention = attention.cpu().numpy()
                raw.append(attention.copy())
                if ref_scores is not None:
                    for row in range(len(attention)):
                        attention[row] = percentileofscore(ref_scores.squeeze(), attention[row].squeeze())
                append_h5(attn_path, {"attention_scores": attention, "coords": batch_coords}, mode)
        if feat_path is not None:
            append_h5(feat_path, {"features": features.cpu().numpy(), "coords": batch_coords}, mode)
        mode = "a"
    return np.concatenate(raw).reshape(-1) if raw else None


# ------------------------------------------------------------------------------------ scripts
def create_patches_fp(slide: Any, config: Any, out: Path, slide_id: str) -> tuple[Any, Path]:
    """create_patches_fp.py --seg --patch (save_mask on by default, --stitch off): segmentTissue, the
    contour mask drawn at the level nearest downsample 64 (visWSI) and saved as JPEG, then
    process_contours with its defaults (four_pt contour check, padding) written to patches/<id>.h5."""
    from attnmap.wsi.patching import patch_grid
    from attnmap.wsi.pipeline.stages import segment_slide

    p = config.patching
    tissue = segment_slide(slide, config.segmentation)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    vis_wsi(slide, tissue, slide.get_best_level_for_downsample(64), 250, False).save(
        out / "masks" / f"{slide_id}.jpg"
    )
    coords = patch_grid(
        slide,
        tissue,
        patch_size=p.patch_size,
        step=p.patch_size,
        level=p.level,
        contour_check="four_pt",
        padding=True,
    )
    path = out / "patches" / f"{slide_id}.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    append_h5(path, {"coords": np.asarray(coords, dtype=np.int64)}, "w")
    with h5py.File(path, "a") as handle:
        handle["coords"].attrs["patch_level"] = p.level
        handle["coords"].attrs["patch_size"] = p.patch_size
    return tissue, path


def run_clam_scripts(
    config: Any,
    slide_path: str,
    encoder: Any,
    model: Any,
    out: Path,
    device: torch.device = torch.device("cpu"),
) -> ClamRun:
    """The three scripts on one slide with ``config``'s settings, timed step by step (`ClamRun`).

    ``encoder``: attnmap's `Encoder` (its network, on ``device``; the transforms are CLAM's, built
    here); ``model``: the CLAM network, on ``device``. Heatmap arguments follow ``config.heatmap``: vis
    level, colour map, alpha, blur, overlap, with CLAM's ``use_ref_scores`` (attnmap also colours the
    overlap grid against the block grid's scores) and ``save_ext`` png (what attnmap writes).
    """
    from attnmap.mil import infer_bag
    from attnmap.wsi.patching import heatmap_center_shift, patch_grid
    from attnmap.wsi.pipeline.stages import segment_slide
    from attnmap.wsi.slide import open_slide

    run = ClamRun()
    p, h, b = config.patching, config.heatmap, config.features.batch_size
    slide_id = Path(slide_path).stem
    transforms = eval_transforms(encoder.transform.size)
    network = encoder.model.eval()
    counted = {"rows": 0}
    hook = network.register_forward_pre_hook(
        lambda _m, inputs: counted.__setitem__("rows", counted["rows"] + len(inputs[0]))
    )

    def encoded(step: str) -> None:
        run.encoded[step], counted["rows"] = counted["rows"], 0

    try:
        with open_slide(slide_path) as slide:
            _, coords_h5 = run.timed("create_patches_fp", create_patches_fp, slide, config, out, slide_id)
            run.timed(
                "extract_features_fp",
                extract_features_fp,
                slide,
                coords_h5,
                network,
                transforms,
                b,
                out / "features",
                device,
            )
            encoded("extract_features_fp")
        with open_slide(slide_path) as slide:  # create_heatmaps.py opens the slide again
            raw_dir = out / "heatmap_raw_results" / slide_id
            raw_dir.mkdir(parents=True, exist_ok=True)

            def initialise() -> Any:  # heatmap_utils initialize_wsi + the numbered mask (visWSI)
                tissue = segment_slide(slide, config.segmentation)
                contours = {
                    "tissue": [t.outer for t in tissue.contours],
                    "holes": [t.holes for t in tissue.contours],
                }
                (raw_dir / f"{slide_id}_mask.pkl").write_bytes(pickle.dumps(contours))
                vis_wsi(slide, tissue, slide.get_best_level_for_downsample(32), 250, True).save(
                    raw_dir / f"{slide_id}_mask.jpg"
                )
                return tissue

            tissue = run.timed("create_heatmaps: the rest", initialise)
            # block map features: Wsi_Region with step = patch size, four_pt_hard, centre shift of overlap 0
            run.block = patch_grid(
                slide,
                tissue,
                patch_size=p.patch_size,
                step=p.patch_size,
                level=p.level,
                contour_check="four_pt_hard",
                padding=True,
                center_shift=heatmap_center_shift(0.0),
            )
            h5_path = raw_dir / f"{slide_id}.h5"
            run.timed(
                "create_heatmaps: block-grid features",
                compute_from_patches,
                slide,
                run.block,
                p.level,
                p.patch_size,
                network,
                transforms,
                b,
                feat_path=h5_path,
                device=device,
            )
            encoded("create_heatmaps: block-grid features")

            def classify() -> tuple[np.ndarray, int]:  # .pt written and loaded, infer_single_slide, blockmap
                with h5py.File(h5_path, "r") as handle:
                    torch.save(torch.tensor(handle["features"][:]), raw_dir / f"{slide_id}.pt")
                features = torch.load(raw_dir / f"{slide_id}.pt").numpy()
                infer_bag(model, features)  # CLAM's infer_single_slide runs the model twice
                bag = infer_bag(model, features)
                branch = bag.branch_for(None)
                scores = np.asarray(bag.scores("raw", branch=branch), np.float32).reshape(-1, 1)
                with h5py.File(h5_path, "r") as handle:
                    coords = handle["coords"][:]
                append_h5(
                    raw_dir / f"{slide_id}_blockmap.h5", {"attention_scores": scores, "coords": coords}, "w"
                )
                vis_heatmap(
                    slide,
                    tissue,
                    scores,
                    coords,
                    vis_level=-1,
                    patch_size=p.patch_size,
                    cmap=h.cmap,
                    alpha=h.alpha,
                    blur=False,
                    overlap=0.0,
                    convert_to_percentiles=True,
                ).save(raw_dir / f"{slide_id}_blockmap.png")
                return scores, branch

            block_scores, branch = run.timed("create_heatmaps: the rest", classify)
            step = int(p.patch_size * (1 - h.overlap))
            run.overlap = patch_grid(
                slide,
                tissue,
                patch_size=p.patch_size,
                step=step,
                level=p.level,
                contour_check="four_pt_hard",
                padding=True,
                center_shift=heatmap_center_shift(h.overlap),
            )
            attn_path = raw_dir / f"{slide_id}_{h.overlap}_roi_False.h5"
            run.overlap_raw = run.timed(
                "create_heatmaps: overlap-grid features",
                compute_from_patches,
                slide,
                run.overlap,
                p.level,
                p.patch_size,
                network,
                transforms,
                b,
                model=model,
                branch=branch,
                ref_scores=block_scores,
                attn_path=attn_path,
                device=device,
            )
            encoded("create_heatmaps: overlap-grid features")

            def draw() -> None:  # the overlap heatmap (and the original, if asked)
                with h5py.File(attn_path, "r") as handle:
                    scores, coords = handle["attention_scores"][:], handle["coords"][:]
                name = f"{slide_id}_{float(h.overlap)}_roi_0_blur_{int(h.blur)}_rs_1_l_{h.vis_level}.png"
                vis_heatmap(
                    slide,
                    tissue,
                    scores,
                    coords,
                    vis_level=h.vis_level,
                    patch_size=p.patch_size,
                    cmap=h.cmap,
                    alpha=h.alpha,
                    blur=h.blur,
                    overlap=h.overlap,
                    convert_to_percentiles=False,
                ).save(out / name)
                if h.save_original:
                    level = slide.get_best_level_for_downsample(32) if h.vis_level < 0 else h.vis_level
                    rgb_region(slide, (0, 0), level, slide.level_dimensions[level]).save(
                        out / f"{slide_id}_orig.png"
                    )

            run.timed("create_heatmaps: the rest", draw)
    finally:
        hook.remove()
    return run
