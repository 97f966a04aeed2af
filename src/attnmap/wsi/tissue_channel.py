"""The one-channel image tissue is thresholded on: HSV saturation (CLAM's) or darkness.

Why two: CLAM tells stained tissue from glass by colour, so it thresholds saturation. A greyscale
brightfield scan (R = G = B, or a one-sample TIFF read as RGB) has no colour: its saturation is
zero everywhere and saturation finds no tissue at all. What separates tissue from glass there is
brightness, so the "darkness" channel is how far each pixel lies below the glass: the background
luminance (`BACKGROUND_PERCENTILE` of the median-blurred luminance, the glass being the brightest
thing on a slide) minus the pixel's, clipped at 0. ``sthresh`` (or Otsu) then thresholds that, as
it thresholds saturation, whose glass is near 0 too.

When the caller leaves the channel unset and the slide is colourless (`is_colourless`), the
darkness channel is used and a one-line warning says so: a grey slide segmented on saturation
silently gives an empty result, which nobody wants, and the choice depends only on the pixels,
so it is the same on every run. A colourless slide that is all glass (`is_blank`) keeps
saturation without a word: it has no tissue on either channel, and its "no tissue" refusal says so.
A channel named by the caller is always used as named.
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np

from attnmap.errors import InputError
from attnmap.wsi.parameters import CHANNELS, DEFAULTS

COLOURLESS_CHROMA = 4
"""The spread max(R, G, B) − min(R, G, B) a pixel of a colourless slide keeps at most: a grey
image stored as JPEG with chroma comes back with R, G and B a level or two apart."""

COLOURLESS_SHARE = 0.001
"""The share of pixels that may exceed `COLOURLESS_CHROMA` on a slide still called colourless
(dust, a hot pixel, a scanner's coloured edge line)."""

BACKGROUND_PERCENTILE = 99.0
"""The percentile of the median-blurred luminance taken as the glass's brightness; a slide covered
edge to edge by tissue gets its lightest tissue instead, which keeps all but that lightest part."""


def check_channel(channel: str) -> str:
    """``channel`` if it is one of `CHANNELS`, else an `InputError` naming the choices."""
    if channel not in CHANNELS:
        raise InputError(f"unknown segmentation channel {channel!r}; choose one of {', '.join(CHANNELS)}")
    return channel


def is_colourless(rgb: np.ndarray) -> bool:
    """Whether an RGB image carries no colour: all but `COLOURLESS_SHARE` of its pixels have their
    three samples within `COLOURLESS_CHROMA` of each other (its saturation is then flat)."""
    image = np.ascontiguousarray(rgb)
    spread = cv2.subtract(image.max(axis=2), image.min(axis=2))
    return int(np.count_nonzero(spread > COLOURLESS_CHROMA)) <= COLOURLESS_SHARE * spread.size


def is_blank(rgb: np.ndarray) -> bool:
    """Whether a colourless RGB image is all glass: no pixel lies below the glass by more than the
    default ``sthresh`` in the darkness channel (median-blurred by the default ``mthresh``), so
    neither channel finds tissue at CLAM's defaults. Such a slide is no greyscale scan: warning that
    it is one sent the user after a scanner setting, when the refusal that follows ("no tissue")
    already says what is wrong."""
    darkness = channel_image(rgb, "darkness", int(DEFAULTS["mthresh"]))
    return int(darkness.max(initial=0)) <= int(DEFAULTS["sthresh"])


def resolve_channel(rgb: np.ndarray, given: str | None, where: str = "the slide") -> str:
    """The channel to segment ``rgb`` on: ``given`` when named, else "saturation", or "darkness"
    with a one-line warning when the image is colourless but not blank (see the module's
    docstring)."""
    if given is not None:
        return check_channel(given)
    if not is_colourless(rgb) or is_blank(rgb):
        return "saturation"
    warnings.warn(
        f"{where} has no colour (a greyscale scan: its saturation is flat), so tissue is found by "
        "darkness instead of CLAM's saturation; set segmentation.channel (--channel) to saturation "
        "or darkness to choose",
        stacklevel=3,
    )
    return "darkness"


def channel_image(rgb: np.ndarray, channel: str, mthresh: int) -> np.ndarray:
    """The median-blurred (kernel ``mthresh``) uint8 ``channel`` of an RGB image, the image that
    is thresholded."""
    image = np.ascontiguousarray(rgb)
    if check_channel(channel) == "saturation":
        return cv2.medianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[:, :, 1], int(mthresh))
    luminance = cv2.medianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), int(mthresh))
    counts = np.cumsum(np.bincount(luminance.ravel(), minlength=256))
    background = int(np.searchsorted(counts, counts[-1] * BACKGROUND_PERCENTILE / 100.0))
    return cv2.subtract(np.full_like(luminance, background), luminance)
