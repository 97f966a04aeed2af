"""What a slide file holds beyond its pixels: its real format and state (for messages), and where
a DICOM folder's slide is (its pixel size: `attnmap.wsi.pixel_size`).

Why its own module: when no reader opens a file, "unsupported or missing image file" (OpenSlide's
words) does not tell a user that the ``.svs`` they were sent is a PNG export, an empty or truncated
download, or a MIRAX file copied without its folder.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from attnmap.errors import InputError

# Leading bytes of formats a slide file is often mistaken for (checked only after every reader failed).
_SIGNATURES: tuple[tuple[bytes, str, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image", ".png"),
    (b"\xff\xd8\xff", "a JPEG image", ".jpg"),
    (b"BM", "a BMP image", ".bmp"),
    (b"GIF8", "a GIF image", ""),
    (b"PK\x03\x04", "a ZIP archive (unpack it first)", ""),
    (b"\x1f\x8b", "a gzip archive (unpack it first)", ""),
    (b"%PDF", "a PDF document", ""),
    (b"<", "a text/HTML/XML file (an error page saved instead of the slide?)", ""),
)
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


class _Silenced(logging.Filter):
    """Drops the records of a logger while any thread is inside `quiet_tifffile`.

    Why a filter and not ``setLevel``: every ``setLevel`` clears the level cache of every logger in
    the process, which costs a few milliseconds once dask, torch and friends have registered their
    hundreds of loggers, and opening one slide enters `quiet_tifffile` several times."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0  # entries now open, nested or from several threads (+= is not atomic: the lock)
        self._lock = threading.Lock()

    def enter(self, step: int) -> None:
        with self._lock:
            self.depth += step

    def filter(self, record: logging.LogRecord) -> bool:
        return self.depth == 0 or record.levelno >= logging.CRITICAL


_TIFFFILE_SILENCED = _Silenced()
logging.getLogger("tifffile").addFilter(_TIFFFILE_SILENCED)


@contextlib.contextmanager
def quiet_tifffile() -> Iterator[None]:
    """tifffile logs a warning per bad page it meets; the one-line errors made from them say it all."""
    _TIFFFILE_SILENCED.enter(1)
    try:
        yield
    finally:
        _TIFFFILE_SILENCED.enter(-1)


def first_line(error: BaseException) -> str:
    """A decoder's message for a one-line error: its first line, or its type when it says nothing."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def describe_content(path: Path) -> tuple[str, str] | None:
    """(what the file is, the suffix attnmap reads it under or "") when its first bytes show it is
    not a slide, else None.

    An empty file, a plain image or archive under a slide's name, a web page saved instead of the
    download; TIFFs (any slide may be one) and unknown bytes give None.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return None
    if not head:
        return "empty (0 bytes): the copy or download did not finish", ""
    if head[:4] in _TIFF_MAGIC:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image", ".webp"
    for signature, what, suffix in _SIGNATURES:
        if head.startswith(signature):
            return what, suffix
    return None


def tiff_damage(path: Path) -> str | None:
    """Why a file that starts like a TIFF is unreadable, when tifffile can tell: a truncated copy
    (image data past its end) or a broken structure; None when it finds nothing wrong.

    Why: OpenSlide answers "Unsupported or missing image file" for a slide cut short by a failed
    copy, which reads as a format problem, not as "copy it again".
    """
    import tifffile

    try:
        with open(path, "rb") as handle:
            if handle.read(4) not in _TIFF_MAGIC:
                return None
        size = path.stat().st_size
        with quiet_tifffile(), tifffile.TiffFile(path) as tif:
            ends = [offset + count for page in tif.pages
                    for offset, count in zip(page.dataoffsets, page.databytecounts, strict=False)]
    except Exception as error:  # noqa: BLE001 - any parser failure is the damage we report
        return f"its TIFF structure is damaged ({first_line(error)})"
    if ends and max(ends) > size:
        return f"it is truncated: {size} bytes, but its image data reaches byte {max(ends)} (copy it again)"
    return None


DOUBLE_SUFFIXES = (".ome.tif", ".ome.tiff")
"""Slide file suffixes of two parts: ``x.ome.tif`` is slide ``x``, not ``x.ome``."""


def slide_name(path: Path) -> str:
    """The name a slide's outputs take: a file's name without its suffix (both parts of an OME-TIFF's
    `DOUBLE_SUFFIXES`), a DICOM folder's whole name (folders are named by UID, whose dots are no
    suffix: ``1.2.826.0.1.7``)."""
    return path.name if path.is_dir() else file_slide_name(path.name)


def file_slide_name(name: str) -> str:
    """`slide_name` of a slide file's name (no look at the disk): its stem, without both parts of
    an OME-TIFF's suffix."""
    lowered = name.lower()
    for suffix in DOUBLE_SUFFIXES:
        if lowered.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def dicom_instance(folder: Path) -> Path | None:
    """The file OpenSlide opens a DICOM WSI folder by: its largest DICOM file (the full-resolution
    instance; OpenSlide finds the series' other levels beside it), or None when it holds none.

    Why: a DICOM slide is a folder of instances, often named by UID without a suffix, and a user
    naturally lists the folder; DICOM files are told by "DICM" after their 128-byte preamble.
    """
    found: list[tuple[int, str, Path]] = []
    for path in folder.iterdir():
        try:
            if path.is_file() and is_dicom(path):
                found.append((-path.stat().st_size, path.name, path))
        except OSError:
            continue
    return min(found)[2] if found else None


def is_dicom(path: Path) -> bool:
    """A DICOM file: "DICM" after its 128-byte preamble (False for a file that cannot be read)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _vms_listed(path: Path) -> list[str] | None:
    """The image, map and optimisation files a Hamamatsu ``.vms`` / ``.vmu`` lists (None when it
    cannot be read as one)."""
    import configparser

    parser = configparser.ConfigParser(strict=False, interpolation=None)
    try:
        parser.read_string(path.read_text(errors="replace"))
    except (OSError, configparser.Error):
        return None
    return [value.strip() for section in parser.sections() for key, value in parser.items(section)
            if key.startswith(("imagefile", "mapfile", "optimisationfile")) and value.strip()]


def companion_files(path: Path) -> list[Path]:
    """The other files a slide's pixels are read from: a MIRAX ``.mrxs``'s folder, the images a
    Hamamatsu ``.vms`` / ``.vmu`` lists, the other instances of a DICOM slide's folder."""
    suffix = path.suffix.lower()
    if suffix == ".mrxs":
        folder = path.with_suffix("")
        return sorted(item for item in folder.iterdir() if item.is_file()) if folder.is_dir() else []
    if suffix in (".vms", ".vmu"):
        names = set(_vms_listed(path) or [])
        return sorted(path.parent / name for name in names if (path.parent / name).is_file())
    if is_dicom(path):
        others = (item for item in path.parent.iterdir() if item != path and item.is_file())
        return sorted(item for item in others if is_dicom(item))
    return []


def missing_companions(path: Path) -> str | None:
    """What is missing beside a multi-file slide whose main file was copied alone, else None.

    Why: a MIRAX ``.mrxs`` is read with the folder of the same name beside it, a Hamamatsu ``.vms``
    / ``.vmu`` with the image files it lists; copied alone, OpenSlide calls them "Unsupported or
    missing image file", which sends a user looking for a format problem.
    """
    suffix = path.suffix.lower()
    if suffix == ".mrxs":
        folder = path.with_suffix("")
        if not (folder / "Slidedat.ini").is_file():
            return (f"a MIRAX slide is the .mrxs file and the folder {folder.name}/ (with Slidedat.ini) "
                    "beside it, and that folder is missing or incomplete: copy both")
        return None
    if suffix in (".vms", ".vmu"):
        names = _vms_listed(path)
        if names is None:
            return None
        missing = [name for name in names if not (path.parent / name).is_file()]
        if missing:
            return (f"a Hamamatsu {suffix} slide is read with the files it lists, and {len(missing)} of "
                    f"them are missing beside it (e.g. {missing[0]}): copy them too")
    return None


def check_plain_tiff(path: Path, series, page) -> None:
    """`InputError` for a TIFF the in-memory reader would misread or could not hold.

    Why: it reads the first page whole, which for a fluorescence / multiplex image (channels as
    separate pages, which no slide reader here opens) is its first channel drawn as grey, and for a
    large planar or otherwise untiled pyramid is gigabytes.
    """
    from PIL import Image

    axes = getattr(series, "axes", "") or ""
    if "C" in axes and series.shape[axes.index("C")] > 1:
        channels = series.shape[axes.index("C")]
        raise InputError(
            f"cannot read slide {path}: it has {channels} separate channels (axes {axes}: fluorescence or "
            "multiplex?); attnmap reads brightfield RGB slides"
        )
    if "I" in axes and series.shape[axes.index("I")] > 1 and int(page.samplesperpixel) == 1:
        raise planes_error(path, int(page.imagewidth), int(page.imagelength))  # grey pages: channels
    limit = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else None  # PIL's limit for PNG/JPEG
    width, height = int(page.imagewidth), int(page.imagelength)
    if limit is not None and width * height > limit:
        raise InputError(
            f"cannot read slide {path}: no slide reader opens this TIFF, and the image reader loads it "
            f"whole, which at {width}×{height} px is too large; convert it to a tiled pyramidal RGB TIFF"
        )


def same_image(full: tuple[int, int], reduced: tuple[int, int]) -> bool:
    """Whether a (width, height) image ``reduced`` can be a level of one ``full``: both sides shrunk
    by one factor, up to the rounding of each side to whole pixels (a 1×1 top of a pyramid is one)."""
    (width, height), (w, h) = full, reduced
    rounding = 2 * width / w / min(w, h)
    return abs(width / w - height / h) <= rounding


def openslide_misreads(path: Path, levels: tuple[tuple[int, int], ...]) -> str | None:
    """Why OpenSlide's generic-TIFF view of ``path`` (its ``levels``' (width, height), level 0
    first) would give wrong or no pixels, else None: the file is then read through tiffslide /
    tifffile instead.

    Why: libtiff's RGBA reader, which OpenSlide decodes generic TIFFs with, scales 16-bit grey
    wrongly, refuses floats at the first read (not at open), draws CIELab in colours of its own and
    takes an extra sample of unspecified meaning for alpha; OpenSlide 4.0.1 fails on
    uncompressed levels whose tile sizes differ; it takes the first page for level 0, so a
    pyramid written smallest page first loses its full resolution and reports that page's pixel size;
    and it takes every tiled page for a level, so a label or macro image written tiled (other sides'
    ratio) became a level between the slide's own, drawn and segmented in their place.
    """
    import tifffile

    level0 = levels[0]
    other = next((size for size in levels[1:] if not same_image(level0, size)), None)
    if other is not None:
        return (f"a tiled {other[0]}×{other[1]} image (a label or macro?) is not a level of its "
                f"{level0[0]}×{level0[1]} image, and OpenSlide takes it for one")
    try:
        with quiet_tifffile(), tifffile.TiffFile(path) as tif:
            images = _images(tif)
            largest = _largest(images)
            if largest is None:
                return None
            if largest.imagewidth * largest.imagelength > level0[0] * level0[1]:
                return (f"its largest image ({largest.imagewidth}×{largest.imagelength}) is not its first "
                        "page, which OpenSlide takes for level 0")
            if int(largest.bitspersample) != 8 or int(largest.sampleformat) != 1:
                return f"{largest.dtype} samples, which OpenSlide reads wrongly or not at all"
            if largest.extrasamples and int(largest.extrasamples[0]) == 0:
                return "an extra sample of unspecified meaning, which OpenSlide takes for alpha"
            if int(largest.photometric) not in (0, 1, 2, 3, 5, 6):  # CIELab, ICCLab, LogLuv, ...
                return f"{largest.photometric.name} pixels, which OpenSlide draws in colours of its own"
            tiled = {(page.tilewidth, page.tilelength) for page in images if page.is_tiled
                     and int(page.compression) == 1}
            if len(tiled) > 1:
                return "uncompressed levels with different tile sizes, which OpenSlide 4.0.1 fails on"
    except Exception:  # noqa: BLE001 - an unparsable TIFF keeps OpenSlide's view
        return None
    return None


def has_alpha(path: Path) -> bool:
    """Whether a TIFF's largest image stores alpha (an associated or unassociated extra sample);
    False for any other file."""
    if path.suffix.lower() not in (".tif", ".tiff", ".svs", ".btf", ".tf8", ".tf2"):
        return False
    import tifffile

    try:
        with quiet_tifffile(), tifffile.TiffFile(path) as tif:
            largest = _largest(_images(tif))
            return largest is not None and any(int(value) in (1, 2) for value in largest.extrasamples or ())
    except Exception:  # noqa: BLE001 - a file tifffile cannot parse holds nothing it would tell
        return False


def _largest(pages: list):
    return max(pages, key=lambda page: page.imagewidth * page.imagelength, default=None)


def _images(tif) -> list:
    """A TIFF's images: its top-level pages and the SubIFD pages under them."""
    import tifffile

    images = []
    for page in tif.pages:
        if page.shape and page.imagewidth and page.imagelength:
            images.append(page)
            if page.subifds:
                images.extend(sub for sub in tifffile.TiffPages(page) if sub.shape)
    return images


def largest_image(path: Path) -> tuple[int, int] | None:
    """(width, height) of a TIFF's largest image, SubIFDs included (None when it cannot be parsed)."""
    import tifffile

    try:
        with quiet_tifffile(), tifffile.TiffFile(path) as tif:
            largest = _largest(_images(tif))
            return None if largest is None else (int(largest.imagewidth), int(largest.imagelength))
    except Exception:  # noqa: BLE001 - nothing known, nothing to compare
        return None


def planes_error(path: Path, width: int, height: int) -> InputError:
    """The one-line refusal of a TIFF whose same-size images are channels or focal planes."""
    return InputError(
        f"cannot read slide {path}: several of its levels are {width}×{height} px, so its pages are channels "
        "or focal planes (fluorescence, multiplex or a z-stack?), not one pyramid; attnmap reads brightfield "
        "RGB slides"
    )


def stacked_planes(path: Path) -> tuple[int, int] | None:
    """(width, height) when several grey top-level pages of a TIFF have its largest size, else None.

    Why: OpenSlide reads such a file (channels of a fluorescence scan written one grey page each)
    as one level, its first channel, and draws it as a grey slide. Same-size RGB pages are focal
    planes of a brightfield z-stack, whose first plane is read, as the in-memory reader does.
    """
    import tifffile

    try:
        with quiet_tifffile(), tifffile.TiffFile(path) as tif:
            sizes = [(int(page.imagewidth), int(page.imagelength), int(page.samplesperpixel))
                     for page in tif.pages if page.shape]
    except Exception:  # noqa: BLE001 - nothing parsed, nothing to refuse
        return None
    largest = max(sizes, key=lambda size: size[0] * size[1], default=None)
    if largest is None or largest[2] != 1 or sizes.count(largest) < 2:
        return None
    return largest[0], largest[1]


def has_subifd_pyramid(path: Path) -> bool:
    """Whether a TIFF's first series has reduced levels (SubIFDs OpenSlide does not see)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0] if tif.series else None
        return series is not None and len(series.levels) > 1
