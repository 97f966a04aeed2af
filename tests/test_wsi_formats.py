"""Whole-slide files as scanners and converters write them: each opens with its levels and pixels in
the right place at level 0, or is refused with one line naming the file and the problem.

The files are small synthetic ones (1024×768, a pink "tissue" rectangle at a known place on white
glass), written in the layouts that real files use: Aperio SVS pages, OME-TIFF SubIFD pyramids,
BigTIFF, JPEG YCbCr / LZW tiles, CMYK and palette pages, strips instead of tiles, levels out of
order or at downsamples that are not powers of 2.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from attnmap.errors import InputError
from attnmap.wsi import open_slide
from attnmap.wsi.pipeline.slide_list import MixedResolutionWarning, warn_mixed_resolutions
from attnmap.wsi.slide import OpenSlideSlide, TiffSlideSlide

WIDTH, HEIGHT = 1024, 768
RECT = (512, 128, 768, 384)  # tissue at level 0: x0, y0, x1, y1
WHITE = 240


def slide_image() -> np.ndarray:
    image = np.full((HEIGHT, WIDTH, 3), WHITE, np.uint8)
    x0, y0, x1, y1 = RECT
    noise = np.random.default_rng(0).integers(0, 40, size=(y1 - y0, x1 - x0), dtype=np.uint8)
    image[y0:y1, x0:x1] = np.stack([200 - noise, 100 + noise, 170 - noise // 2], axis=2)
    return image


def shrink(image: np.ndarray, factor: int) -> np.ndarray:
    """Box-filtered level at ``factor`` (sizes floored, as scanners write them)."""
    size = (image.shape[1] // factor, image.shape[0] // factor)
    return np.asarray(Image.fromarray(image).resize(size, Image.BOX))


def write_pages(path: Path, levels: list[np.ndarray], mpp: float = 0.5, **options) -> Path:
    """Each level a tiled page, reduced ones with subfiletype 1 (what OpenSlide's generic TIFF reads)."""
    bigtiff = options.pop("bigtiff", False)
    options.setdefault("photometric", "rgb")
    options.setdefault("compression", "zlib")
    with tifffile.TiffWriter(path, bigtiff=bigtiff) as tif:
        for index, level in enumerate(levels):
            ppcm = 1e4 / mpp * level.shape[1] / WIDTH
            tif.write(level, tile=(128, 128), subfiletype=int(index > 0), resolution=(ppcm, ppcm),
                      resolutionunit="CENTIMETER", metadata=None, **options)
    return path


def write_aperio(path: Path, image: np.ndarray, mpp: float = 0.5) -> Path:
    """An SVS as Aperio writes it: JPEG tiles, level 0, a stripped thumbnail, levels at downsample 4
    and 16, then label and macro pages (NewSubfileType 1 and 9), each with its ImageDescription."""
    library = "Aperio Image Library v12.0.15"
    head = f"{library} \r\n{WIDTH}x{HEIGHT} [0,0 {WIDTH}x{HEIGHT}] (128x128) JPEG/RGB Q=90"
    jpeg = {"compression": "jpeg", "compressionargs": {"level": 90}, "photometric": "rgb", "metadata": None}
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(128, 128), description=f"{head}|AppMag = 20|MPP = {mpp}", **jpeg)
        tif.write(shrink(image, 32), description=f"{head} -> 32x24|AppMag = 20|MPP = {mpp}", **jpeg)
        for factor in (4, 16):
            level = shrink(image, factor)
            size = f"{level.shape[1]}x{level.shape[0]}"
            tif.write(level, tile=(128, 128), description=f"{head} -> {size}", **jpeg)
        tif.write(np.full((60, 90, 3), 255, np.uint8), subfiletype=1, compression="lzw", photometric="rgb",
                  description=f"{library}\r\nlabel 90x60", metadata=None)
        tif.write(shrink(image, 8), subfiletype=9, description=f"{library}\r\nmacro 128x96", **jpeg)
    return path


def to_cmyk(rgb: np.ndarray) -> np.ndarray:
    scaled = rgb.astype(np.float64) / 255
    key = 1 - scaled.max(axis=2)
    ink = (1 - scaled - key[..., None]) / np.maximum(1 - key[..., None], 1e-6)
    return (np.dstack([ink, key]) * 255).round().astype(np.uint8)


def _palette(path: Path, image: np.ndarray) -> Path:
    quantised = Image.fromarray(image).quantize(16)
    indices = np.asarray(quantised)
    colours = np.zeros((256, 3), np.uint16)
    colours[:16] = np.array(quantised.getpalette()[:48]).reshape(16, 3)
    return write_pages(path, [indices, indices[::2, ::2].copy(), indices[::4, ::4].copy()],
                       photometric="palette", colormap=colours.T * 257)


def _ome(path: Path, image: np.ndarray) -> Path:
    """OME-TIFF: the reduced levels as SubIFDs of level 0, the pixel size in OME-XML only."""
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(128, 128), photometric="rgb", compression="zlib", subifds=2,
                  metadata={"axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25})
        for factor in (2, 4):
            tif.write(shrink(image, factor), tile=(128, 128), photometric="rgb", compression="zlib",
                      subfiletype=1)
    return path


def _striped(path: Path, image: np.ndarray) -> Path:
    """An untiled pyramid in strips (OpenSlide refuses it; tiffslide reads strips by rows)."""
    with tifffile.TiffWriter(path) as tif:
        for index, factor in enumerate((1, 2, 4)):
            tif.write(shrink(image, factor), photometric="rgb", compression="zlib", rowsperstrip=32,
                      subfiletype=int(index > 0), resolution=(2e4 / factor, 2e4 / factor),
                      resolutionunit="CENTIMETER", metadata=None)
    return path


def _ycbcr(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).convert("YCbCr"))


WRITERS = {
    "aperio.svs": lambda p, im: write_aperio(p, im),
    "ome_subifd.ome.tif": _ome,
    "bigtiff.tif": lambda p, im: write_pages(p, [im, shrink(im, 2), shrink(im, 4)], bigtiff=True),
    "jpeg_ycbcr.tif": lambda p, im: write_pages(p, [_ycbcr(im), _ycbcr(shrink(im, 2))], photometric="ycbcr",
                                                compression="jpeg", subsampling=(2, 2)),
    "lzw_predictor.tif": lambda p, im: write_pages(p, [im, shrink(im, 2)], compression="lzw", predictor=True),
    "cmyk.tif": lambda p, im: write_pages(p, [to_cmyk(im), to_cmyk(shrink(im, 2))], photometric="separated"),
    "palette.tif": _palette,
    "rgba.tif": lambda p, im: write_pages(p, [np.dstack([lv, np.full(lv.shape[:2], 255, np.uint8)])
                                              for lv in (im, shrink(im, 2))], extrasamples=[2]),
    "rgb16.tif": lambda p, im: write_pages(p, [lv.astype(np.uint16) * 257 for lv in (im, shrink(im, 2))]),
    "striped.tif": _striped,
    "out_of_order.tif": lambda p, im: write_pages(p, [shrink(im, 4), im, shrink(im, 2)]),
    "downsample_3.tif": lambda p, im: write_pages(p, [im, shrink(im, 3), shrink(im, 9)]),
    "single_level.tif": lambda p, im: write_pages(p, [im]),
    "Schnitt Ä 組織 1.tif": lambda p, im: write_pages(p, [im, shrink(im, 2)]),
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_every_level_shows_the_tissue_where_it_is_at_level_0(tmp_path: Path, name: str) -> None:
    """Level 0 coordinates land on the tissue at every level, whatever the layout or pixel format."""
    image = slide_image()
    path = WRITERS[name](tmp_path / name, image)
    with open_slide(path) as slide:
        assert slide.dimensions == (WIDTH, HEIGHT)
        assert list(slide.level_downsamples) == sorted(slide.level_downsamples)
        for level in range(slide.level_count):
            scale_x, scale_y = slide.level_scale_xy(level)
            width, height = slide.level_dimensions[level]
            assert (width, height) == (int(WIDTH / scale_x), int(HEIGHT / scale_y)), (name, level)
            region = slide.read_region((0, 0), level, (width, height)).astype(int)
            pink = (region[..., 0] - region[..., 1]) > 40
            ys, xs = np.nonzero(pink)
            box = (xs.min() * scale_x, ys.min() * scale_y, (xs.max() + 1) * scale_x, (ys.max() + 1) * scale_y)
            tolerance = 2 * max(scale_x, scale_y) + 8  # JPEG ringing and box-filtered borders
            np.testing.assert_allclose(box, RECT, atol=tolerance, err_msg=f"{name} level {level}")
            glass = region[~pink]
            assert np.abs(np.median(glass, axis=0) - WHITE).max() <= 3, (name, level)


def test_aperio_pages_give_levels_mpp_and_no_label_or_macro(tmp_path: Path) -> None:
    with open_slide(write_aperio(tmp_path / "scan.svs", slide_image(), mpp=0.2527)) as slide:
        assert isinstance(slide, OpenSlideSlide)
        assert slide.level_dimensions == ((1024, 768), (256, 192), (64, 48))
        assert slide.level_downsamples == (1.0, 4.0, 16.0)
        assert slide.mpp == pytest.approx(0.2527)


def test_pixel_size_of_tiffs_that_only_tiffslide_reads(tmp_path: Path) -> None:
    """OME-XML PhysicalSizeX and resolution tags: OpenSlide reports the tags for the TIFFs it opens,
    tiffslide reported neither, so a cohort's pixel sizes depended on the backend (None here)."""
    image = slide_image()
    with open_slide(_ome(tmp_path / "ome.ome.tif", image)) as slide:
        assert isinstance(slide, TiffSlideSlide) and slide.level_count == 3
        assert slide.mpp == pytest.approx(0.25)
    with open_slide(_striped(tmp_path / "striped.tif", image)) as slide:
        assert isinstance(slide, TiffSlideSlide) and slide.level_count == 3
        assert slide.mpp == pytest.approx(0.5)


def _one_line_error(path: Path) -> str:
    with pytest.raises(InputError) as caught:
        open_slide(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


def test_files_that_are_not_what_their_name_says(tmp_path: Path) -> None:
    """An empty copy, a PNG saved as .svs, a web page saved instead of the slide: OpenSlide says
    "Unsupported or missing image file" for each; the message says what the file is."""
    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    assert "the file is empty (0 bytes)" in _one_line_error(empty)
    png = tmp_path / "export.svs"
    Image.fromarray(slide_image()).save(png, format="PNG")
    assert _one_line_error(png).endswith("the file is a PNG image, not a .svs file; rename it to .png to "
                                         "read it as a plain image")
    page = tmp_path / "download.ndpi"
    page.write_text("<!DOCTYPE html><html>Access denied</html>")
    assert "a text/HTML/XML file" in _one_line_error(page)


def test_a_multi_file_slide_copied_without_its_data_says_what_is_missing(tmp_path: Path) -> None:
    """MIRAX and Hamamatsu VMS slides are a main file plus data beside it; copied alone, OpenSlide
    called them "Unsupported or missing image file"."""
    mirax = tmp_path / "case 3.mrxs"
    mirax.write_text("[GENERAL]\r\nSLIDE_VERSION = 01.02\r\n")
    expected = ("a MIRAX slide is the .mrxs file and the folder case 3/ (with Slidedat.ini) beside it, "
                "and that folder is missing or incomplete: copy both")
    assert _one_line_error(mirax).endswith(expected)
    vms = tmp_path / "scan.vms"
    vms.write_text("[Virtual Microscope Specimen]\r\nNoLayers=1\r\nImageFile=scan.jpg\r\n"
                   "ImageFile(1,0)=scan_1.jpg\r\nMapFile=scan_map.jpg\r\n")
    (tmp_path / "scan.jpg").write_bytes(b"")
    assert _one_line_error(vms).endswith("2 of them are missing beside it (e.g. scan_1.jpg): copy them too")


@pytest.mark.parametrize("name", ["cut.svs", "cut.tif"])
def test_a_truncated_copy_says_so(tmp_path: Path, name: str) -> None:
    """A slide cut short: OpenSlide refused it as unsupported, and tiffslide opened the .tif and
    failed in the middle of the run with tifffile's "corrupted tile" (a TiffFileError)."""
    image = slide_image()
    whole = write_aperio(tmp_path / "whole.svs", image) if name.endswith(".svs") else write_pages(
        tmp_path / "whole.tif", [image, shrink(image, 2)], compression="lzw")
    data = whole.read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    assert "it is truncated" in _one_line_error(path)


def _corrupt_tile(path: Path) -> Path:
    """Overwrite the middle of a level-0 tissue tile with bytes no decoder accepts."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        tile = (RECT[1] // page.tilelength) * (WIDTH // page.tilewidth) + RECT[0] // page.tilewidth
        offset, count = page.dataoffsets[tile], page.databytecounts[tile]
    data = bytearray(path.read_bytes())
    start = offset + count // 4
    data[start : start + count // 2] = b"\xff\x00" * (count // 4) + b"\x00" * (count // 2 - 2 * (count // 4))
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("name", ["aperio.svs", "lzw_predictor.tif", "ome_subifd.ome.tif"])
def test_a_damaged_tile_is_one_error_naming_file_and_region(tmp_path: Path, name: str) -> None:
    """A tile that does not decode: OpenSlideError "Bogus Huffman table definition" or imagecodecs'
    DeflateError, naming neither the slide nor the place, failed the slide (or a CLI command with a
    traceback)."""
    path = _corrupt_tile(WRITERS[name](tmp_path / name, slide_image()))
    with open_slide(path) as slide, pytest.raises(InputError) as caught:
        slide.read_region((RECT[0], RECT[1]), 0, (64, 64))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"cannot read slide {path}: level 0, region at level-0 ({RECT[0]}, {RECT[1]}), "
                              "64×64 px: its pixels do not decode, the file is damaged or truncated or ")


def test_a_cohort_of_mixed_resolutions_is_warned_in_one_line() -> None:
    mpps = {"a": 0.2527, "b": 0.2465, "c": 0.503, "d": None, "e": 0.25, "f": 0.2499}
    with pytest.warns(MixedResolutionWarning) as caught:
        warn_mixed_resolutions(mpps, patch_size=256, level=0)
    message = str(caught[0].message)
    assert "\n" not in message
    assert "(0.246–0.253 µm/px: b, f, e and 1 more; 0.503 µm/px: c; not recorded: d)" in message
    assert "patching.patch_size is 256 px at level 0" in message and "2.04× apart" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_mixed_resolutions({"a": 0.2527, "b": 0.2465, "c": None}, patch_size=256, level=0)  # one 40×
        warn_mixed_resolutions({"a": 0.5}, patch_size=256, level=0)


def test_the_slide_list_check_warns_of_mixed_resolutions(tmp_path: Path) -> None:
    """`attnmap wsi run` opens every slide before any work; there it reads the pixel sizes."""
    from synthetic_slide_files import write_pipeline_setup, write_test_slide

    from attnmap.wsi.pipeline.config import load_config, read_slide_list

    config = load_config(write_pipeline_setup(tmp_path, n_slides=3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_slide_list(config)  # every slide at 0.5 µm/px
    write_test_slide(tmp_path / "slides" / "slide_2.tif", seed=2, mpp=0.25)
    with pytest.warns(MixedResolutionWarning, match=r"\(0.25 µm/px: slide_2; 0.5 µm/px: slide_0, slide_1\)"):
        read_slide_list(config)

    import json

    from attnmap.wsi.pipeline.cohort import run_cohort

    config.slides.csv = str(tmp_path / "two.csv")  # a run keeps the warning in its report
    (tmp_path / "two.csv").write_text("slide_id\nslide_0\nslide_2\n")
    with pytest.warns(MixedResolutionWarning):
        report = run_cohort(config, workers=1, progress=False)
    assert report.ok
    saved = json.loads((Path(config.run.output_dir) / "run_report.json").read_text())
    assert len(saved["warnings"]) == 1 and "0.25 µm/px: slide_2; 0.5 µm/px: slide_0" in saved["warnings"][0]


def test_a_damaged_tile_read_by_a_loader_process_keeps_its_one_line(tmp_path: Path) -> None:
    """torch re-raised the worker's InputError as "Caught InputError in DataLoader worker process 0."
    followed by the worker's traceback: that was the slide's line in the run report."""
    from attnmap.wsi.encoders import load_encoder
    from attnmap.wsi.features import extract_features

    path = _corrupt_tile(WRITERS["lzw_predictor.tif"](tmp_path / "slide.tif", slide_image()))
    encoder = load_encoder("attnmap:tiny", input_size=16)
    coords = np.array([[RECT[0], RECT[1]]])
    with pytest.raises(InputError) as caught:
        extract_features(path, coords, encoder, patch_size=64, num_workers=1, progress=False, cpu_graph=False)
    where = f"level 0, region at level-0 ({RECT[0]}, {RECT[1]}), 64×64 px"
    message = str(caught.value)
    assert message.startswith(f"cannot read slide {path}: {where}: its pixels do not decode")
    assert "\n" not in message


def test_a_level_too_large_to_segment_or_draw_is_refused_before_any_work(tmp_path: Path, monkeypatch) -> None:
    """A single-level gigapixel TIFF: segmentation read its only level whole (OpenSlide's RGBA: 4
    bytes a pixel), and the process was killed for memory instead of the slide being refused."""
    from synthetic_slide_files import write_pipeline_setup

    from attnmap.wsi import segment_tissue, tissue
    from attnmap.wsi.pipeline.config import load_config, read_slide_list

    monkeypatch.setattr(tissue, "MAX_SEGMENTATION_PIXELS", 300_000)  # the setup's slides: 1024×768, 512×384
    config = load_config(write_pipeline_setup(tmp_path, n_slides=1))
    read_slide_list(config)  # segmentation.level 1: 512×384
    config.segmentation.level = 0
    expected = (r"^segmentation.level: level 0 of .*slide_0.tif is 1024×768 px, more than the 300000 read "
                r"whole to find tissue; set segmentation.level to a coarser one \(1\)$")
    with pytest.raises(InputError, match=expected):
        read_slide_list(config)
    single = write_pages(tmp_path / "single.tif", [slide_image()])
    no_pyramid = r"more than the 300000 read whole to find tissue; leave segmentation.level unset"
    with open_slide(single) as slide, pytest.raises(InputError, match=no_pyramid):
        segment_tissue(slide, level=0)  # named: read whole, so refused (a chosen one is read shrunk)
    from attnmap.wsi.heatmap import renderer

    monkeypatch.setattr(renderer, "MAX_CANVAS_PIXELS", 300_000)
    write_pages(tmp_path / "slides" / "slide_0.tif", [slide_image()])  # the same slide without its pyramid
    config.segmentation.level = None
    config.heatmap = dataclasses.replace(config.heatmap, vis_level=-1)
    with pytest.raises(InputError, match=r"drawn in memory: choose a heatmap.roi, or as the slide has no "
                       r"coarser level, convert it to a tiled pyramidal TIFF"):
        read_slide_list(config)


def write_dicom_wsi(folder: Path, image: np.ndarray, mpp: float = 0.25, factors: tuple[int, ...] = (1, 4)
                    ) -> Path:
    """A DICOM VL Whole Slide Microscopy series as a PACS exports it: a folder with one instance per
    level, named by number without a suffix, tiled full, uncompressed RGB frames."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    tile = 128
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    for index, factor in enumerate(factors):
        level = shrink(image, factor)
        height, width = level.shape[:2]
        rows, columns = -(-height // tile), -(-width // tile)
        padded = np.full((rows * tile, columns * tile, 3), 255, np.uint8)
        padded[:height, :width] = level
        frames = padded.reshape(rows, tile, columns, tile, 3).swapaxes(1, 2).reshape(-1, tile, tile, 3)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy Image
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_reference
        ds.Modality, ds.PatientID, ds.InstanceNumber = "SM", "1", index + 1
        ds.ImageType = ["ORIGINAL" if index == 0 else "DERIVED", "PRIMARY", "VOLUME",
                        "NONE" if index == 0 else "RESAMPLED"]
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.Rows = ds.Columns = tile
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.NumberOfFrames = len(frames)
        ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = width, height
        ds.DimensionOrganizationType = "TILED_FULL"
        ds.TotalPixelMatrixFocalPlanes = ds.NumberOfOpticalPaths = 1
        optical_path = Dataset()
        optical_path.OpticalPathIdentifier = "1"
        ds.OpticalPathSequence = [optical_path]
        spacing = Dataset()
        spacing.PixelSpacing = [mpp * factor / 1000] * 2  # millimetres
        shared = Dataset()
        shared.PixelMeasuresSequence = [spacing]
        ds.SharedFunctionalGroupsSequence = [shared]
        ds.PixelData = frames.tobytes()
        ds.save_as(folder / f"IM{index:04d}", enforce_file_format=True)
    return folder


def test_a_dicom_folder_is_a_slide(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """OpenSlide 4 reads DICOM WSI by any instance; the slide list took no folder ("is a folder, not a
    slide file") and the instances, named without a suffix, were hard to name."""
    pytest.importorskip("pydicom")
    from synthetic_slide_files import write_pipeline_setup

    from attnmap.wsi.pipeline.config import load_config, read_slide_list

    image = slide_image()
    folder = write_dicom_wsi(tmp_path / "dicom" / "case 7", image)
    with open_slide(folder) as slide:
        assert isinstance(slide, OpenSlideSlide)
        assert slide.level_dimensions == ((WIDTH, HEIGHT), (WIDTH // 4, HEIGHT // 4))
        assert slide.mpp == pytest.approx(0.25)
        np.testing.assert_array_equal(slide.read_region((500, 100), 0, (300, 200)), image[100:300, 500:800])
    config = load_config(write_pipeline_setup(tmp_path / "setup", n_slides=1))
    (tmp_path / "dicom.csv").write_text("slide_path\ndicom/case 7\n")
    config.slides.csv, config.slides.data_dir, config.slides.extension = str(tmp_path / "dicom.csv"), None, ""
    config.segmentation.level = 1
    (entry,) = read_slide_list(config)
    assert (entry.slide_id, entry.path) == ("case 7", str(folder / "IM0000"))
    from cli_runner import run_cli

    code, stdout, _ = run_cli(capsys, "wsi", "segment", folder, "-o", tmp_path / "out", "--seg-level", "1",
                              "--a-t", "0.05", "--a-h", "0.01")
    assert code == 0 and "case 7: segmented" in stdout
    assert (tmp_path / "out" / "tissue" / "case 7.json").is_file()
    import h5py  # wsi heatmap takes the folder too (its slide argument refused folders)

    with h5py.File(tmp_path / "scores.h5", "w") as handle:
        handle["coords"] = np.array([[0, 0], [256, 0], [0, 256]], dtype=np.int64)
        handle["attention_scores"] = np.array([[0.1], [0.9], [0.5]])
    code, _, _ = run_cli(capsys, "wsi", "heatmap", folder, "--scores", tmp_path / "scores.h5", "--patch-size",
                         "256", "-o", tmp_path / "heat")
    assert code == 0 and (tmp_path / "heat" / "case 7_heatmap.png").is_file()
    empty = tmp_path / "empty folder"
    empty.mkdir()
    with pytest.raises(InputError, match=r"^slide path is a folder without DICOM files, not a slide: .*r$"):
        open_slide(empty)


def test_a_dicom_folder_named_by_uid_keeps_its_whole_name(tmp_path: Path, capsys) -> None:
    """DICOM folders are named by UID: `wsi heatmap` took the folder's name up to
    its last dot, so ``1.2.826.0.1.7`` wrote ``1.2.826.0.1_heatmap.png``, unlike every other
    command, and a second series ``1.2.826.0.1.8`` overwrote it. Its tissue file (of the level-0
    instance the folder is read by) is this slide's, not another's."""
    pytest.importorskip("pydicom")
    from cli_runner import run_cli

    from attnmap.wsi.scores_io import save_scores_h5

    image = slide_image()
    folder = write_dicom_wsi(tmp_path / "1.2.826.0.1.7", image)
    code, _, err = run_cli(capsys, "wsi", "segment", folder, "-o", tmp_path / "out", "--seg-level", "1",
                           "--a-t", "0.05", "--a-h", "0.01")
    assert code == 0, err
    tissue = tmp_path / "out" / "tissue" / "1.2.826.0.1.7.json"
    scores = save_scores_h5(tmp_path / "scores.h5", np.array([[0, 0], [256, 0], [0, 256]]), np.arange(3.0))
    code, _, err = run_cli(capsys, "wsi", "heatmap", folder, "--scores", scores, "--patch-size", "256",
                           "--tissue", tissue, "-o", tmp_path / "heat")
    assert code == 0, err
    assert [path.name for path in (tmp_path / "heat").iterdir()] == ["1.2.826.0.1.7_heatmap.png"]


def test_the_viewer_takes_a_dicom_folder_with_its_scores(tmp_path: Path, capsys) -> None:
    """`attnmap view FOLDER --scores FILE` said "--scores goes with a slide file, not with a folder"
    for a DICOM slide, which `wsi heatmap` takes; the slide keeps its folder's whole name."""
    pytest.importorskip("pydicom")
    from attnmap.view.sources import discover
    from attnmap.wsi.scores_io import save_scores_h5

    folder = write_dicom_wsi(tmp_path / "1.2.826.0.1.7", slide_image())
    scores = save_scores_h5(tmp_path / "scores.h5", np.array([[0, 0], [256, 0], [0, 256]]), np.arange(3.0))
    (slide,) = discover(folder, scores=[scores])
    assert slide.slide_id == "1.2.826.0.1.7" and list(slide.score_sets) == ["attention"]
    with open_slide(slide.slide_path) as opened:
        assert opened.dimensions == (WIDTH, HEIGHT)
    with pytest.raises(InputError, match="^--scores goes with a slide file or a DICOM slide's folder, not "):
        discover(tmp_path, scores=[scores])  # a folder that is no slide
    with pytest.raises(InputError, match=r"1.2.826.0.1.7 is a slide \(a DICOM folder\): give its scores"):
        discover(folder)  # said "expected a `wsi run` output folder", as of a folder of anything


def test_the_tissue_file_says_which_library_read_the_slide(tmp_path: Path) -> None:
    """The same .tif opens through OpenSlide (page pyramid) or tiffslide (SubIFDs, strips): which
    one, and the pixel size it reported, were said nowhere."""
    import json

    from synthetic_slide_files import write_pipeline_setup

    from attnmap.wsi.pipeline.config import SlideEntry, load_config
    from attnmap.wsi.pipeline.outputs import SlideOutputs
    from attnmap.wsi.pipeline.stages import tissue_stage

    config = load_config(write_pipeline_setup(tmp_path, n_slides=0))
    config.segmentation.level = None
    for name, reader, mpp in (("pages.tif", "OpenSlide", "0.5"), ("ome.ome.tif", "tiffslide", "0.25")):
        image = slide_image()
        path = write_pages(tmp_path / name, [image, shrink(image, 2)]) if reader == "OpenSlide" else _ome(
            tmp_path / name, image)
        entry = SlideEntry(str(path), Path(name).stem)
        outputs = SlideOutputs(tmp_path / "out", entry.slide_id)
        with open_slide(path) as slide:
            tissue_stage(slide, entry, config, outputs)
        record = json.loads(outputs.tissue.read_text())["provenance"]
        assert (record["slide_reader"], record["slide_mpp"]) == (reader, mpp)


def test_tiffs_no_slide_reader_opens(tmp_path: Path, monkeypatch) -> None:
    """tiffslide reads no planar (SYX) or channel (CYX) series, so these reached the in-memory reader,
    which loaded a planar pyramid's level 0 whole, took a fluorescence image's first channel as a
    grey slide, and would load any size."""
    import PIL.Image

    image = slide_image()
    planar = tmp_path / "planar.ome.tif"
    with tifffile.TiffWriter(planar) as tif:  # brightfield RGB stored plane by plane: read right
        tif.write(np.moveaxis(image, 2, 0), tile=(128, 128), photometric="rgb", planarconfig="separate",
                  subifds=1, metadata={"axes": "SYX"})
        tif.write(np.moveaxis(shrink(image, 2), 2, 0), tile=(128, 128), photometric="rgb",
                  planarconfig="separate", subfiletype=1)
    with open_slide(planar) as slide:  # read lazily, pyramid kept (it was loaded whole, level 0 only)
        assert slide.reader == "tifffile" and slide.level_dimensions == ((1024, 768), (512, 384))
        np.testing.assert_array_equal(slide.read_region((500, 100), 0, (300, 200)), image[100:300, 500:800])
        np.testing.assert_array_equal(slide.read_region((500, 100), 1, (150, 100)),
                                      shrink(image, 2)[50:150, 250:400])
    fluorescence = tmp_path / "fluo.ome.tif"
    tifffile.imwrite(fluorescence, np.zeros((5, 96, 128), np.uint16), photometric="minisblack",
                     metadata={"axes": "CYX"})
    assert _one_line_error(fluorescence).endswith("it has 5 separate channels (axes CYX: fluorescence or "
                                                  "multiplex?); attnmap reads brightfield RGB slides")
    stack = tmp_path / "channels.tif"  # channel pages, tiled: OpenSlide made levels of them
    channels = np.zeros((4, 384, 512), np.uint16)
    with tifffile.TiffWriter(stack) as tif:
        tif.write(channels, tile=(128, 128), photometric="minisblack", metadata={"axes": "CYX"})
        tif.write(channels[:, ::2, ::2], tile=(128, 128), photometric="minisblack", subfiletype=1,
                  metadata=None)
    repeated = "several of its levels are 256×192 px, so its pages are channels or focal planes"
    assert repeated in _one_line_error(stack)
    stack = tmp_path / "z_stack.tif"  # focal planes: only the in-memory reader takes (its first)
    tifffile.imwrite(stack, np.stack([image, image]), photometric="rgb", metadata={"axes": "ZYXS"})
    with open_slide(stack) as slide:
        assert slide.reader == "in memory"
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 100_000)
    too_large = "which at 1024×768 px is too large; convert it to a tiled pyramidal RGB TIFF"
    assert too_large in _one_line_error(stack)


_RESOLUTIONS = [("INCH", 72, None), ("INCH", 300, None), ("INCH", 50800, 0.5), ("CENTIMETER", 40000, 0.25),
                ("CENTIMETER", 28.35, None), ("CENTIMETER", 37.8, None), ("CENTIMETER", 72 / 2.54, None)]


@pytest.mark.parametrize(("unit", "per_unit", "mpp"), _RESOLUTIONS)
def test_a_placeholder_dpi_is_no_pixel_size(tmp_path: Path, unit: str, per_unit: float, mpp: float | None):
    """Image tools write 72 dpi by default; OpenSlide read it as 352.8 µm per pixel, which the viewer's
    scale bar and the cohort's resolution warning took as the scan's."""
    image = slide_image()
    path = tmp_path / "converted.tif"
    with tifffile.TiffWriter(path) as tif:
        for index, factor in enumerate((1, 2)):
            tif.write(shrink(image, factor), tile=(128, 128), photometric="rgb", subfiletype=int(index > 0),
                      resolution=(per_unit / factor, per_unit / factor), resolutionunit=unit, metadata=None)
    with open_slide(path) as slide:
        assert isinstance(slide, OpenSlideSlide)
        assert slide.mpp == (None if mpp is None else pytest.approx(mpp))
    from attnmap.wsi.pixel_size import tiff_mpp_xy

    assert tiff_mpp_xy(path)[0] == (None if mpp is None else pytest.approx(mpp))  # tiffslide's reading


@pytest.mark.parametrize("name", ["aperio.svs", "ome_subifd.ome.tif", "downsample_3.tif"])
def test_the_pipeline_puts_patches_and_heat_on_the_tissue(tmp_path: Path, name: str) -> None:
    """End to end through each reader and level layout (OpenSlide at downsamples 4 and 16, tiffslide
    on SubIFDs, levels at downsample 3): the patches and the heatmap's colour sit on the tissue."""
    from synthetic_slide_files import write_pipeline_setup

    from attnmap.wsi.pipeline.config import SlideEntry, load_config
    from attnmap.wsi.pipeline.run import run_slide

    path = WRITERS[name](tmp_path / name, slide_image())
    config = load_config(write_pipeline_setup(tmp_path / "setup", n_slides=0))
    config.segmentation.level = None  # each layout's own choice of level
    config.heatmap = dataclasses.replace(config.heatmap, vis_level=-1)
    result = run_slide(SlideEntry(str(path), "s"), config, out_dir=tmp_path / "out")
    import json

    import h5py

    with h5py.File(tmp_path / "out" / "patches" / "s.h5") as handle:
        coords = handle["coords"][:]
        seg_level = json.loads((tmp_path / "out" / "tissue" / "s.json").read_text())["seg_level"]
    with open_slide(path) as slide:
        pixel = max(slide.level_scale_xy(seg_level))  # contours are as fine as the segmentation level
    x0, y0, x1, y1 = RECT
    assert result["n_patches"] == len(coords) > 0
    xs, ys = coords[:, 0], coords[:, 1]
    assert ((xs + 64 > x0 - pixel) & (xs < x1 + pixel) & (ys + 64 > y0 - pixel) & (ys < y1 + pixel)).all()
    covered = np.zeros((HEIGHT, WIDTH), bool)
    for x, y in coords:
        covered[y : y + 64, x : x + 64] = True
    assert covered[y0:y1, x0:x1].mean() > 0.9
    heatmap = np.asarray(Image.open(tmp_path / "out" / "heatmaps" / "s" / "s_heatmap.png").convert("RGB"))
    coloured = (heatmap.max(axis=2).astype(int) - heatmap.min(axis=2)) > 60
    rows, columns = np.nonzero(coloured)
    scale = WIDTH / heatmap.shape[1]
    box = np.array([columns.min(), rows.min(), columns.max() + 1, rows.max() + 1]) * scale
    np.testing.assert_allclose(box, RECT, atol=64 + 2 * scale)
