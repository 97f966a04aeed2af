"""A title band above and a colour bar below a picture, drawn with Pillow at any picture size.

Why not matplotlib here: slide heatmaps are thousands of pixels wide; a figure would resample them.
This keeps the picture's pixels untouched and only adds bands: the title (slide, method, class,
prediction) on top and, underneath, the colour bar with tick labels in score units and a caption
saying how scores became colours (`ScoreScale.describe`).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from attnmap.render.scale import ScoreScale, colour_table


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def legend_height(width: int) -> tuple[int, int]:
    """(title band, colour bar band) heights in pixels for a picture ``width`` wide."""
    text = max(11, min(40, width // 45))
    return int(text * 1.9), int(text * 4.4)


def add_legend(image: np.ndarray, scale: ScoreScale, title: str, label: str = "score") -> np.ndarray:
    """``image`` (H, W, 3 uint8) with a title band above and a colour bar of ``scale`` below."""
    image = np.asarray(image, dtype=np.uint8)
    height, width = image.shape[:2]
    width_out = max(width, 240)
    top, bottom = legend_height(width_out)
    text_size = max(11, min(40, width_out // 45))
    canvas = Image.new("RGB", (width_out, height + top + bottom), (255, 255, 255))
    canvas.paste(Image.fromarray(image[:, :, :3]), ((width_out - width) // 2, top))
    draw = ImageDraw.Draw(canvas)
    font = _font(text_size)
    draw.text((text_size // 2, int(text_size * 0.4)), title, fill=(0, 0, 0), font=font)
    margin = text_size
    bar_left, bar_right = margin, width_out - margin
    bar_top = height + top + int(text_size * 0.4)
    bar_height = int(text_size * 0.9)
    table = colour_table(scale.cmap, max(2, bar_right - bar_left))
    bar = np.repeat(table[None], bar_height, axis=0)
    canvas.paste(Image.fromarray(bar), (bar_left, bar_top))
    draw.rectangle((bar_left - 1, bar_top - 1, bar_right, bar_top + bar_height), outline=(80, 80, 80))
    small = _font(max(10, int(text_size * 0.8)))
    tick_y = bar_top + bar_height + 2
    for position, text in scale.ticks():
        x = bar_left + position * (bar_right - bar_left - 1)
        draw.line((x, bar_top + bar_height, x, tick_y + 2), fill=(60, 60, 60))
        anchor = "la" if position == 0 else ("ra" if position == 1 else "ma")
        draw.text((x, tick_y + 3), text, fill=(0, 0, 0), font=small, anchor=anchor)
    draw.text((bar_left, tick_y + 3 + int(text_size * 1.1)), f"{label}: {scale.describe()}",
              fill=(70, 70, 70), font=small)
    return np.asarray(canvas)


def describe_prediction(name: str | None, probability: float | None) -> str:
    """"predicted tumour (p = 0.93)", or "" when nothing is known."""
    if name is None:
        return ""
    return f"predicted {name}" + (f" (p = {probability:.3f})" if probability is not None else "")
