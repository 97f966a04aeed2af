"""A slide's pixel size (µm per level-0 pixel) from what its file records, and the check that its
pixels are square.

Why its own module: tiffslide reports no µm per pixel for OME-TIFFs or generic TIFFs, which
OpenSlide reads from the same files' resolution tags, so a cohort's pixel sizes would depend on the
backend; and every reader records x and y apart while attnmap keeps one number (``Slide.mpp``,
x's): the scale bar and the cohort's resolution check take the pixels for square. A slide whose x
and y differ by more than `ANISOTROPY_TOLERANCE` gets one warning naming both, once per file in a
process, rather than x reported without a word. Nothing attnmap computes is wrong for it (patches
are cut in pixels, as CLAM cuts them), but they cover non-square areas of tissue. Each reader
keeps y's beside it (``Slide.mpp_xy``), so a heatmap TIFF records each axis's own resolution and a
viewer overlays it on the slide as is.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from attnmap.wsi.slide_files import _largest, quiet_tifffile

PLACEHOLDER_DPI = (72.0, 96.0, 300.0, 25.4)
"""Resolutions per inch that image tools write by default: no pixel size. Screen and print dpi, and
libvips' 1 pixel per mm (written as 10 px/cm: 1000 µm per pixel) on an image that recorded none, as
`vips tiffsave --tile --pyramid` (the conversion `tissue.PYRAMID_HINT` suggests) gives a slide."""

_CM_PER_INCH = 2.54


def is_placeholder(per_unit: float, unit: str) -> bool:
    """Whether ``per_unit`` pixels per ``unit`` ("inch" or "centimeter") is one of `PLACEHOLDER_DPI`:
    tools that record centimetres write them rounded (72 dpi as 28.35 px/cm), hence the tolerance."""
    per_inch = per_unit * _CM_PER_INCH if unit == "centimeter" else per_unit if unit == "inch" else None
    return per_inch is not None and any(abs(per_inch - dpi) <= 1e-3 * dpi for dpi in PLACEHOLDER_DPI)

ANISOTROPY_TOLERANCE = 0.01
"""The relative difference of x's and y's µm per pixel a slide may have and still be called square."""

_warned: set[tuple[str, float, float]] = set()


def square_pair(x: float | None, y: float | None, where: str) -> tuple[float | None, float | None]:
    """(x, y) µm per pixel as a slide keeps them (``Slide.mpp``, ``Slide.mpp_y``); both None when x
    is unknown (a y alone sizes nothing). A one-line warning, once per ``where`` and values, when
    ``y`` differs from ``x`` by more than `ANISOTROPY_TOLERANCE`."""
    if x is None:
        return None, None
    if y is not None and abs(x - y) > ANISOTROPY_TOLERANCE * max(x, y) and (where, x, y) not in _warned:
        _warned.add((where, x, y))
        warnings.warn(
            f"{where} has non-square pixels: {x:.6g} µm per pixel in x, {y:.6g} in y; attnmap uses x's "
            "for the scale bar, and each patch covers "
            f"{x:.4g} × {y:.4g} µm of tissue per pixel",
            stacklevel=2,
        )
    return x, y


def properties_mpp_xy(properties: dict) -> tuple[float | None, float | None]:
    """(x, y) µm per pixel as the backend reports them, except a generic TIFF's `PLACEHOLDER_DPI`
    (72, 96, 300 per inch, libvips' 10 per centimetre, in either unit), which image tools write by
    default and OpenSlide turns into 353, 265, 85 or 1000 µm/px: a scale bar and a cohort's
    resolution check would take that for a pixel size."""
    resolution = properties.get("tiff.XResolution")
    try:
        if (properties.get("openslide.vendor") == "generic-tiff" and resolution
                and is_placeholder(float(resolution), str(properties.get("tiff.ResolutionUnit")))):
            return None, None
        x, y = (_number(properties.get(f"openslide.mpp-{axis}") or properties.get(f"tiffslide.mpp-{axis}"))
                for axis in "xy")
    except ValueError:
        return None, None
    return x, y


def _number(value: object) -> float | None:
    return float(value) if value not in (None, "") else None  # type: ignore[arg-type]


def tiff_mpp_xy(path: Path, page=None) -> tuple[float | None, float | None]:
    """(x, y) µm per pixel of a TIFF's full-resolution image: OME-XML ``PhysicalSizeX`` / ``Y``, else
    the X/YResolution and ResolutionUnit of ``page`` (default: the largest top-level page, which a
    pyramid written smallest first does not put first); screen and print dpi say nothing: None."""
    import tifffile

    try:
        with quiet_tifffile(), tifffile.TiffFile(path) as tif:
            if tif.is_ome and tif.ome_metadata:
                x, y = _ome_mpp(tif.ome_metadata)
                if x is not None:
                    return x, y
            return resolution_mpp_xy(page if page is not None
                                     else _largest([p for p in tif.pages if p.shape]))
    except Exception:  # noqa: BLE001 - no readable metadata is no pixel size, not an error
        return None, None


_OME_UNITS_UM = {"m": 1e6, "cm": 1e4, "mm": 1e3, "µm": 1.0, "um": 1.0, "nm": 1e-3, "Å": 1e-4}


def _ome_mpp(xml: str) -> tuple[float | None, float | None]:
    """(``PhysicalSizeX``, ``PhysicalSizeY``) of the first OME image that has an x size, in µm
    (OME's default unit); None for a size missing or unreadable."""
    import xml.etree.ElementTree as ElementTree

    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return None, None
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] == "Pixels" and "PhysicalSizeX" in element.attrib:
            return _ome_size(element.attrib, "X"), _ome_size(element.attrib, "Y")
    return None, None


def _ome_size(attributes: dict, axis: str) -> float | None:
    scale = _OME_UNITS_UM.get(attributes.get(f"PhysicalSize{axis}Unit", "µm"))
    try:
        value = float(attributes[f"PhysicalSize{axis}"])
    except (KeyError, ValueError):
        return None
    return value * scale if scale is not None and value > 0 else None


def resolution_mpp_xy(page) -> tuple[float | None, float | None]:
    """(x, y) µm per pixel from a TIFF page's X/YResolution and ResolutionUnit, if they say something."""
    tags = page.tags
    if "XResolution" not in tags or "ResolutionUnit" not in tags:
        return None, None
    unit = int(tags["ResolutionUnit"].value)
    x = _resolution(tags["XResolution"].value, unit)
    y = _resolution(tags["YResolution"].value, unit) if "YResolution" in tags else None
    return x, y


def _resolution(value: tuple[int, int], unit: int) -> float | None:
    numerator, denominator = value
    if numerator == 0 or denominator == 0:
        return None
    per_unit = numerator / denominator
    name = {2: "inch", 3: "centimeter"}.get(unit)
    if name is None or is_placeholder(per_unit, name):
        return None
    return (1e4 if unit == 3 else 25400.0) / per_unit
