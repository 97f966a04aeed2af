"""A title band above and a colour bar below a picture, drawn with Pillow at any picture size.

Why not matplotlib here: slide heatmaps are thousands of pixels wide; a figure would resample them.
This keeps the picture's pixels untouched and only adds bands: the title (slide, method, class,
prediction) on top and, underneath, the colour bar with tick labels in score units and a caption
saying how scores became colours (`ScoreScale.describe`).
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from attnmap.render.overlay import to_uint8_rgb
from attnmap.render.scale import ScoreScale, colour_table


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def legend_height(width: int) -> tuple[int, int]:
    """(title band, colour bar band) heights in pixels for a picture ``width`` wide."""
    text = _text_size(width)
    return int(text * 1.9), int(text * 4.4)


def _text_size(width: int) -> int:
    """The legend's text size in pixels for a legend ``width`` wide."""
    return max(11, min(40, width // 45))


def wrap_text(text: str, font: ImageFont.ImageFont, width: float) -> list[str]:
    """``text`` in lines no wider than ``width`` pixels, broken at " · " first, then at spaces
    (a word longer than the line stays whole: cut text would say something else)."""
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength
    lines: list[str] = []
    for part in text.split(" · "):
        if lines and measure(f"{lines[-1]} · {part}", font=font) <= width:
            lines[-1] = f"{lines[-1]} · {part}"
            continue
        line = ""
        for word in part.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and measure(candidate, font=font) > width:
                lines.append(line)
                candidate = word
            line = candidate
        lines.append(line)
    return lines


def _sizes(width: int) -> tuple[int, int]:
    """(picture width, text size) of the legend under a picture ``width`` wide."""
    width_out = max(width, 240)
    return width_out, _text_size(width_out)


def _fonts(text_size: int) -> tuple[ImageFont.ImageFont, ImageFont.ImageFont]:
    """The title's font and the smaller one of the ticks and the caption."""
    return _font(text_size), _font(max(10, int(text_size * 0.8)))


@functools.lru_cache(maxsize=64)  # a cohort's heatmaps are laid out twice each: offset, then drawing
def _layout(width: int, title: str, caption: str) -> tuple[int, int, int, int, tuple, tuple]:
    """(picture width, title band, colour bar band, text size, title lines, caption lines) of `add_legend`."""
    width_out, text_size = _sizes(width)
    top, bottom = legend_height(width_out)
    font, small = _fonts(text_size)
    title_lines = wrap_text(title, font, width_out - text_size)
    caption_lines = wrap_text(caption, small, width_out - 2 * text_size)
    top += int(text_size * 1.2) * (len(title_lines) - 1)
    bottom += int(text_size * 1.1) * (len(caption_lines) - 1)
    return width_out, top, bottom, text_size, tuple(title_lines), tuple(caption_lines)


def legend_offset(width: int, scale: ScoreScale, title: str, label: str = "score") -> tuple[int, int]:
    """Where `add_legend` puts a picture ``width`` wide: the (x, y) of its top-left pixel.

    Why: a heatmap's pixels map to slide pixels only once this offset is known (it is recorded
    with the heatmap PNG, `attnmap.wsi.heatmap.placement`).
    """
    width_out, top, *_ = _layout(width, title, f"{label}: {scale.describe()}")
    return (width_out - width) // 2, top


TICK_COUNTS = (5, 3, 2)
"""Ticks a colour bar tries, most first: fewer where the labels of more would run into each other
(the PNG's legend here, the viewer's page with the same labels, `attnmap.view.payloads`)."""


def legend_ticks(scale: ScoreScale, width: int) -> list[tuple[float, str]]:
    """The colour bar's ticks under a picture ``width`` wide: five, or three or two when the labels
    of five would run into each other ("-0.000855-0.000428" under a small picture)."""
    width_out, text_size = _sizes(width)
    _, small = _fonts(text_size)
    bar = width_out - 2 * text_size - 1
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength
    for count in TICK_COUNTS:
        ticks = scale.ticks(count)
        right = -float("inf")
        for position, text in ticks:
            size = measure(text, font=small)
            left = position * bar - (0 if position == 0 else size if position == 1 else size / 2)
            if left < right + text_size / 2:
                break
            right = left + size
        else:
            return ticks
    return ticks


def add_legend(image: np.ndarray, scale: ScoreScale, title: str, label: str = "score") -> np.ndarray:
    """``image`` (H, W, 3 uint8) with a title band above and a colour bar of ``scale`` below.

    The title and the caption wrap to the picture's width (a narrow slide's heatmap cut them off).
    """
    image = to_uint8_rgb(image)  # floats in [0, 1] cast straight to uint8 would be all black
    height, width = image.shape[:2]
    caption = f"{label}: {scale.describe()}"
    width_out, top, bottom, text_size, title_lines, caption_lines = _layout(width, title, caption)
    font, small = _fonts(text_size)
    line_height = int(text_size * 1.2)
    canvas = Image.new("RGB", (width_out, height + top + bottom), (255, 255, 255))
    canvas.paste(Image.fromarray(image[:, :, :3]), legend_offset(width, scale, title, label))
    draw = ImageDraw.Draw(canvas)
    for index, line in enumerate(title_lines):
        corner = (text_size // 2, int(text_size * 0.4) + index * line_height)
        draw.text(corner, line, fill=(0, 0, 0), font=font)
    margin = text_size
    bar_left, bar_right = margin, width_out - margin
    bar_top = height + top + int(text_size * 0.4)
    bar_height = int(text_size * 0.9)
    table = colour_table(scale.cmap, max(2, bar_right - bar_left))
    bar = np.repeat(table[None], bar_height, axis=0)
    canvas.paste(Image.fromarray(bar), (bar_left, bar_top))
    draw.rectangle((bar_left - 1, bar_top - 1, bar_right, bar_top + bar_height), outline=(80, 80, 80))
    tick_y = bar_top + bar_height + 2
    for position, text in legend_ticks(scale, width):
        x = bar_left + position * (bar_right - bar_left - 1)
        draw.line((x, bar_top + bar_height, x, tick_y + 2), fill=(60, 60, 60))
        anchor = "la" if position == 0 else ("ra" if position == 1 else "ma")
        draw.text((x, tick_y + 3), text, fill=(0, 0, 0), font=small, anchor=anchor)
    for index, line in enumerate(caption_lines):
        draw.text((bar_left, tick_y + 3 + int(text_size * 1.1) * (index + 1)), line, fill=(70, 70, 70),
                  font=small)
    return np.asarray(canvas)


def describe_prediction(name: str | None, probability: float | None) -> str:
    """"predicted tumour (p = 0.93)", or "" when nothing is known."""
    if name is None:
        return ""
    return f"predicted {name}" + (f" (p = {probability:.3f})" if probability is not None else "")
