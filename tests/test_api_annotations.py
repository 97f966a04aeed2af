"""The public functions' type hints admit what README says they take.

A user's type checker reads the hints, not README: ``overlay`` said its image was an array or a
tensor where README (and the code) take a PIL image too, and the slide heatmap functions said
``np.ndarray`` for scores and coordinates that README says may be lists or tensors (a model's
output as it is), so mypy refused correct calls.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable

import numpy as np
import pytest
import torch
from PIL import Image

import attnmap
from attnmap.wsi import render_heatmap, write_heatmap_tiff
from attnmap.wsi.heatmap.scores import percentiles_against, to_percentiles
from attnmap.wsi.scores_io import sample_patches


def admits(annotation: object, value: object) -> bool:
    """Whether ``value`` is of the (resolved) ``annotation``: unions, classes, generic aliases."""
    if annotation is typing.Any:
        return True
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return any(admits(member, value) for member in typing.get_args(annotation))
    origin = typing.get_origin(annotation)
    return isinstance(value, origin if origin is not None else annotation)


def hint(function: Callable[..., object], name: str) -> object:
    """The resolved annotation of parameter ``name`` (a string under postponed annotations; a name
    imported for type checkers only, matplotlib's ``Colormap``, given here)."""
    from matplotlib.colors import Colormap

    annotation = inspect.signature(function).parameters[name].annotation
    names = {"Colormap": Colormap, **function.__globals__}
    return eval(annotation, names) if isinstance(annotation, str) else annotation


NUMBERS = [np.zeros(3), torch.zeros(3), [0.0, 1.0, 2.0]]


@pytest.mark.parametrize(
    ("function", "names"),
    [
        (render_heatmap, ("coords", "scores", "reference_scores")),
        (write_heatmap_tiff, ("coords", "scores", "reference_scores")),
        (to_percentiles, ("scores",)),
        (percentiles_against, ("scores", "reference")),
        (sample_patches, ("coords", "scores")),
    ],
)
def test_scores_and_coordinates_are_hinted_as_arrays_lists_or_tensors(function, names) -> None:
    for name in names:
        for value in NUMBERS:
            assert admits(hint(function, name), value), (function.__name__, name, type(value).__name__)


def test_overlay_is_hinted_to_take_a_pil_image_and_tensors() -> None:
    picture = Image.new("RGB", (8, 8))
    assert admits(hint(attnmap.overlay, "image"), picture)
    assert attnmap.overlay(picture, np.eye(2)).shape == (8, 8, 3)  # and it does
    for value in (np.zeros((8, 8, 3), np.uint8), torch.zeros(3, 8, 8)):
        assert admits(hint(attnmap.overlay, "image"), value)
        assert admits(hint(attnmap.overlay, "heatmap"), value)


def test_overlay_is_hinted_to_take_a_colormap_object() -> None:
    """README: "any matplotlib colour map or Colormap object"; the hint said ``str``."""
    import matplotlib

    viridis = matplotlib.colormaps["viridis"]
    assert admits(hint(attnmap.overlay, "cmap"), viridis)
    assert attnmap.overlay(np.zeros((8, 8, 3), np.uint8), np.eye(2), cmap=viridis).shape == (8, 8, 3)


def test_the_package_ships_its_py_typed_marker() -> None:
    """Without ``py.typed`` (PEP 561) a user's mypy skipped attnmap ('missing library stubs or
    py.typed marker') and every hint above was invisible; the marker is in the package and in the
    files a wheel takes."""
    import re
    from pathlib import Path

    package = Path(attnmap.__file__).parent
    assert (package / "py.typed").is_file()
    pyproject = package.parents[1] / "pyproject.toml"
    if pyproject.is_file():  # a source checkout (an installed wheel has the file or not, checked above)
        text = pyproject.read_text()
        section = re.search(r"\[tool\.setuptools\.package-data\]\s*attnmap = \[(.*?)\]", text)
        assert section is not None and '"py.typed"' in section.group(1)
