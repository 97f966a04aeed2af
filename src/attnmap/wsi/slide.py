"""One `Slide` interface over OpenSlide formats (DICOM too), SubIFD pyramids (tiffslide, else tifffile)
and plain images.

Why a wrapper: the segmentation, patching and heatmap code only needs level geometry and
`read_region`; keeping that surface small lets tests and benchmarks use synthetic slides (any subclass
of `Slide`) and lets plain PNG/JPEG/WebP/TIFF images flow through the same pipeline as gigapixel slides.
Nothing is read until asked, except plain images, which are small by nature and loaded once.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from attnmap.errors import InputError
from attnmap.wsi.array_slide import ArraySlide
from attnmap.wsi.pixel_size import properties_mpp_xy, resolution_mpp_xy, square_pair, tiff_mpp_xy
from attnmap.wsi.pixels import as_rgb8, over_white, pil_rgb8, sample_converter, series_converter
from attnmap.wsi.slide_base import Slide
from attnmap.wsi.slide_files import (
    check_plain_tiff,
    describe_content,
    dicom_instance,
    first_line,
    has_alpha,
    has_subifd_pyramid,
    largest_image,
    missing_companions,
    openslide_misreads,
    planes_error,
    quiet_tifffile,
    stacked_planes,
    tiff_damage,
)

PLAIN_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
TIFF_SUFFIXES = {".tif", ".tiff"}
# What OpenSlide reads (it tells formats by content; these are their usual file names): named in
# the message for a file that nothing here could open.
SLIDE_SUFFIXES = (
    ".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".dcm"
)


class OpenSlideSlide(Slide):
    """OpenSlide backend (SVS, NDPI, MRXS, generic tiled TIFF with page pyramids, ...)."""

    reader = "OpenSlide"

    def __init__(self, path: str, handle) -> None:
        self.path = path
        self._handle = handle
        self.level_dimensions = tuple(tuple(int(v) for v in dim) for dim in handle.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in handle.level_downsamples)
        properties = dict(handle.properties)
        self.mpp, self.mpp_y = square_pair(*properties_mpp_xy(properties), path)
        if self.mpp is None and properties.get("openslide.vendor") == "generic-tiff":
            # an OME-TIFF says it in its XML, which OpenSlide ignores
            self.mpp, self.mpp_y = square_pair(*tiff_mpp_xy(Path(path)), path)
        sizes = self.level_dimensions
        repeated = [size for index, size in enumerate(sizes) if size in sizes[:index]]
        if repeated:  # OpenSlide's generic TIFF takes a stack of channel pages for levels
            handle.close()
            raise planes_error(Path(path), *repeated[0])

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        level = self.check_level(level)
        if size[0] <= 0 or size[1] <= 0:
            return super().read_region(location, level, size)
        corner, extent = (int(location[0]), int(location[1])), (int(size[0]), int(size[1]))
        try:
            image = self._handle.read_region(corner, level, extent)
        except Exception as error:  # noqa: BLE001 - OpenSlide's errors name neither file nor place
            raise self._damaged(level, corner, extent, error) from error
        rgba = np.asarray(image)
        rgb = rgba[:, :, :3].copy()
        if rgba[:, :, 3].min() < 255:  # transparent inside the level is unscanned glass: white
            x0, y0, x1, y1 = self._inside(level, corner, extent)
            if x1 > x0 and y1 > y0:  # outside the level stays black, as OpenSlide's and CLAM's borders
                rgb[y0:y1, x0:x1] = over_white(rgb[y0:y1, x0:x1], rgba[y0:y1, x0:x1, 3])
        return rgb

    def level0_location(
        self, level: int, x: int, y: int, origin: tuple[int, int] = (0, 0)
    ) -> tuple[int, int]:
        """OpenSlide does not floor location / downsample: it paints the level shifted by the
        fraction, so the nearest whole location is the one closest to the level's pixel (x, y)
        counted from where ``origin`` is painted."""
        scale_x, scale_y = self._read_scale(self.check_level(level))
        return round(int(origin[0]) + int(x) * scale_x), round(int(origin[1]) + int(y) * scale_y)

    def pixel_reading(self) -> str | None:
        """None, but for a TIFF whose samples hold alpha: OpenSlide gives its transparent pixels as
        black, which this reader makes white (see `Slide.pixel_reading`)."""
        return f"{self.reader}, alpha over white" if has_alpha(Path(self.path)) else None

    def _inside(
        self, level: int, corner: tuple[int, int], extent: tuple[int, int]
    ) -> tuple[int, int, int, int]:
        """The window (x0, y0, x1, y1) of a region read at level-0 ``corner`` that lies on the level."""
        scale_x, scale_y = self._read_scale(level)
        x, y = math.floor(corner[0] / scale_x), math.floor(corner[1] / scale_y)
        width, height = self.level_dimensions[level]
        return max(-x, 0), max(-y, 0), min(width - x, extent[0]), min(height - y, extent[1])

    def _damaged(
        self, level: int, corner: tuple[int, int], extent: tuple[int, int], error: Exception
    ) -> InputError:
        """The one-line error for pixels the backend could not decode: a damaged or truncated file,
        or one the library mishandles (OpenSlide 4.0.1 fails on uncompressed TIFF levels whose tile
        sizes differ once another level was read).

        Why here: the decoders' own messages ("Bogus Huffman table definition", "corrupted tile")
        name neither the slide nor the place, and arrive as types no caller expects.
        """
        return InputError(
            f"cannot read slide {self.path}: level {level}, region at level-0 ({corner[0]}, {corner[1]}), "
            f"{extent[0]}×{extent[1]} px: its pixels do not decode, the file is damaged or truncated or "
            f"a variant {self.reader} does not read ({self.reader}: {first_line(error)})"
        )

    def deep_zoom_generator(self, tile_size: int, overlap: int):  # -> openslide.deepzoom.DeepZoomGenerator
        """OpenSlide's own Deep Zoom tiler over this slide's levels (whole level 0, no bounds crop):
        the viewer's fast path, which composites OpenSlide's RGBA regions itself."""
        from openslide.deepzoom import DeepZoomGenerator

        return DeepZoomGenerator(self._handle, tile_size, overlap, limit_bounds=False)

    def close(self) -> None:
        self._handle.close()


class TiffSlideSlide(OpenSlideSlide):
    """tiffslide backend: TIFF pyramids stored as SubIFDs, which OpenSlide does not see.

    tiffslide hands pixels over as stored (grey, 16-bit, ...), not as RGBA like OpenSlide, so
    they go through `as_rgb8`; the pixel type is checked once when the slide is opened.
    """

    reader = "tiffslide"
    pixel_reading = Slide.pixel_reading
    level0_location = Slide.level0_location  # tiffslide floors location / downsample

    def __init__(self, path: str, handle) -> None:
        try:  # tiffslide raises for series it does not read (planar, channels) when asked for properties
            self._convert = series_converter(Path(path))
            super().__init__(path, handle)
            largest = largest_image(Path(path))
            if largest is not None and largest[0] * largest[1] > self.dimensions[0] * self.dimensions[1]:
                raise InputError(f"{path}: tiffslide reads its first series, not its largest image {largest}")
            if self.mpp is None:  # tiffslide reads it from Aperio descriptions only; OpenSlide also from tags
                self.mpp, self.mpp_y = square_pair(*tiff_mpp_xy(Path(path)), path)
            self.read_region((0, 0), self.level_count - 1, (1, 1))
        except BaseException:
            handle.close()
            raise

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        level = self.check_level(level)
        if size[0] <= 0 or size[1] <= 0:
            return Slide.read_region(self, location, level, size)
        corner, extent = (int(location[0]), int(location[1])), (int(size[0]), int(size[1]))
        try:
            pixels = self._handle.read_region(corner, level, extent, as_array=True)
        except Exception as error:  # noqa: BLE001 - tifffile / imagecodecs errors name no file
            raise self._damaged(level, corner, extent, error) from error
        rgb = np.ascontiguousarray(as_rgb8(self._convert(pixels), self.path))
        x0, y0, x1, y1 = self._inside(level, corner, extent)
        if (x0, y0, x1, y1) != (0, 0, extent[0], extent[1]):  # outside the level: black, as OpenSlide's
            inside = rgb[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)].copy()
            rgb[:] = 0
            rgb[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = inside
        return rgb


def _open_plain(path: Path) -> Slide:
    if path.suffix.lower() in TIFF_SUFFIXES:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            check_plain_tiff(path, tif.series[0] if tif.series else None, page)
            image = page.asarray()
            if image.ndim == 3 and image.shape[0] in (3, 4) and image.shape[2] not in (3, 4):
                image = np.moveaxis(image, 0, 2)
            image = sample_converter(page, str(path))(image)
            mpp, mpp_y = square_pair(*resolution_mpp_xy(page), str(path))
        slide = ArraySlide(as_rgb8(image, str(path)), str(path), mpp)
        slide.mpp_y = mpp_y
        return slide
    from PIL import Image

    try:
        opened = Image.open(path)
    except Image.DecompressionBombError as error:  # PIL's limit: ~179 Mpx, loaded whole
        raise InputError(
            f"cannot read slide {path}: a plain image is loaded whole and this one is too large "
            f"({error}); convert it to a tiled pyramidal TIFF"
        ) from None
    with opened as image:
        rgb = pil_rgb8(image, str(path))
    return ArraySlide(rgb, str(path))


def open_slide(path: str | Path) -> Slide:
    """Open a whole-slide image or a plain image as a `Slide`.

    OpenSlide first (it knows vendor formats, DICOM and page pyramids); for TIFFs whose pyramid sits
    in SubIFDs (which OpenSlide reports as one level) or that OpenSlide refuses, tiffslide, then
    tifffile (`attnmap.wsi.tifffile_slide`); plain PNG/JPEG/WebP/BMP images and other TIFFs are
    loaded into memory. A folder is a DICOM WSI (its largest instance is opened). Raises
    `InputError` naming the file when it is missing, unreadable, truncated, not what its name says,
    or a multi-file slide missing its data, and the formats read when it is none of them.
    """
    with quiet_tifffile():
        return _open_slide(path)


def _open_slide(path: str | Path) -> Slide:
    """`open_slide` itself (with tifffile's page warnings silenced)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"slide file not found: {path}")
    if path.is_dir():
        instance = dicom_instance(path)
        if instance is None:
            raise InputError(f"slide path is a folder without DICOM files, not a slide: {path}")
        path = instance
    if not path.is_file():
        raise InputError(f"slide path is not a file: {path}")
    suffix = path.suffix.lower()
    errors: list[str] = []
    misread = None
    if suffix not in PLAIN_IMAGE_SUFFIXES:
        import openslide

        try:
            handle = openslide.OpenSlide(str(path))
        except (openslide.OpenSlideError, openslide.OpenSlideUnsupportedFormatError) as exc:
            damage = tiff_damage(path) or missing_companions(path)  # a cut-short or partial copy
            if damage is not None:
                raise InputError(f"cannot read slide {path}: {damage}") from None
            errors.append(f"OpenSlide: {exc}")
        else:
            slide = OpenSlideSlide(str(path), handle)
            generic = handle.properties.get("openslide.vendor") == "generic-tiff"
            planes = stacked_planes(path) if generic else None
            if planes is not None:  # OpenSlide shows the first of them as one grey level
                slide.close()
                raise planes_error(path, *planes)
            misread = openslide_misreads(path, slide.level_dimensions) if generic else None
            try:
                single = suffix in TIFF_SUFFIXES and slide.level_count == 1
                use_tiffslide = misread is not None or (single and has_subifd_pyramid(path))
            except Exception:  # noqa: BLE001 - an unparsable TIFF simply keeps the OpenSlide view
                use_tiffslide = False
            if not use_tiffslide:
                return slide
            slide.close()
            if misread is not None:
                errors.append(f"OpenSlide: {misread}")
        if suffix in TIFF_SUFFIXES or misread is not None:
            try:
                import tiffslide

                return TiffSlideSlide(str(path), tiffslide.TiffSlide(str(path)))
            except Exception as exc:  # noqa: BLE001 - fall through to tifffile, then the plain reader
                errors.append(f"tiffslide: {first_line(exc)}")
            from attnmap.wsi.tifffile_slide import TifffileSlide

            try:
                return TifffileSlide(path)
            except Exception as exc:  # noqa: BLE001 - e.g. channel axes: the plain reader names them
                errors.append(f"tifffile: {first_line(exc)}")
    if suffix in PLAIN_IMAGE_SUFFIXES | TIFF_SUFFIXES:
        try:
            return _open_plain(path)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - any decoder failure means a corrupt file
            errors.append(f"image reader: {exc}")
    if suffix not in PLAIN_IMAGE_SUFFIXES and suffix not in SLIDE_SUFFIXES:
        raise InputError(
            f"cannot read slide {path}: {suffix or 'a file without suffix'} is not a format attnmap reads "
            f"(slides: {', '.join(SLIDE_SUFFIXES)}; plain images: {', '.join(sorted(PLAIN_IMAGE_SUFFIXES))}, "
            ".tif)"
        )
    content = describe_content(path)
    if content is not None:
        what, usual = content
        if what.startswith("empty"):
            raise InputError(f"cannot read slide {path}: the file is {what}")
        rename = f"; rename it to {usual} to read it as a plain image" if usual and usual != suffix else ""
        raise InputError(
            f"cannot read slide {path}: the file is {what}, not a {suffix or 'slide'} file{rename}"
        )
    detail = "; ".join(errors) if errors else "unknown format"
    raise InputError(f"cannot read slide {path}: not a supported or intact slide/image ({detail})")
