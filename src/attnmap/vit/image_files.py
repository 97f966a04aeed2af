"""Which image files a user's arguments name: files, folders, patterns no shell expanded.

Why its own module: what `attnmap explain` reads decides what it writes (a file named twice would
be written twice, an output folder that is an input folder would be read back), so the rules live
in one place, apart from the explaining itself.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from attnmap.errors import InputError
from attnmap.vit.preprocess import IMAGE_SUFFIXES


class EarlierOutputWarning(UserWarning):
    """Files named as images are pictures an earlier run wrote into the output folder: left out."""


def expand_image_paths(inputs: Sequence[str | Path], out_dir: str | Path | None = None) -> list[Path]:
    """Files as given, directories expanded to the image files inside (``IMAGE_SUFFIXES``; sorted, not
    recursive, hidden files such as macOS's ``._photo.png`` left out), glob patterns a shell did not
    expand (``"photos/*.png"``) to the files they match. A file named twice (directly, through its
    folder, a pattern or a link) is explained once: its outputs would otherwise be written twice
    under two names.

    ``out_dir``: the output folder; a folder of inputs that is the output folder is refused, as a
    rerun would read the earlier run's overlays as images. Files named one by one may lie in it
    (``photos/*.jpg --out photos``), but the pictures attnmap wrote there are left out, with an
    `EarlierOutputWarning`: ``photos/*.png`` named an earlier run's overlays, explained as photos.
    """
    paths: list[Path] = []
    for entry in map(Path, inputs):
        if entry.is_dir():
            if out_dir is not None and _same_folder(entry, Path(out_dir)):
                raise InputError(
                    f"--out {out_dir} is the image folder {entry}: a rerun would read its overlays as "
                    "images; give another output folder"
                )
            found = sorted(
                p
                for p in entry.iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            )
            if not found:
                suffixes = "/".join(IMAGE_SUFFIXES)
                raise InputError(f"no images ({suffixes}) in directory {entry}{_subfolders(entry)}")
            paths.extend(found)
        elif entry.exists():
            paths.append(entry)
        elif any(mark in entry.name for mark in "*?["):  # a pattern no shell expanded
            matches = sorted(Path(p) for p in glob.glob(str(entry)) if Path(p).is_file())
            if not matches:
                raise InputError(f"no file matches {entry}")
            paths.extend(matches)
        else:
            raise InputError(f"image file not found: {entry}")
    if not paths:
        raise InputError("no images given")
    seen: set[Path] = set()
    unique = []
    for path in paths:
        if path.resolve() not in seen:
            seen.add(path.resolve())
            unique.append(path)
    return unique if out_dir is None else _without_earlier_outputs(unique, Path(out_dir))


def _without_earlier_outputs(paths: list[Path], out_dir: Path) -> list[Path]:
    """``paths`` less the PNGs in ``out_dir`` that carry attnmap's fingerprint (its own pictures)."""
    from attnmap.fingerprint import FINGERPRINT_KEY
    from attnmap.io_utils import read_png_text

    def earlier_output(path: Path) -> bool:
        if path.suffix.lower() != ".png" or not _same_folder(path.parent, out_dir):
            return False
        try:
            return FINGERPRINT_KEY in read_png_text(path)
        except (OSError, ValueError, SyntaxError):  # not a readable PNG: the run says so per image
            return False

    left_out = [path for path in paths if earlier_output(path)]
    if not left_out:
        return paths
    more = f" and {len(left_out) - 1} more" if len(left_out) > 1 else ""
    if len(left_out) == len(paths):
        raise InputError(
            f"{left_out[0]}{more}: pictures attnmap wrote into --out {out_dir}, not images to explain"
        )
    warnings.warn(
        f"attnmap: left out {left_out[0]}{more}: pictures an earlier run wrote into --out {out_dir}, not "
        "images to explain (an output folder apart from the images keeps them apart)",
        EarlierOutputWarning,
        stacklevel=3,
    )
    return [path for path in paths if path not in left_out]


def _subfolders(folder: Path) -> str:
    """What to say of ``folder``'s subfolders when it holds no images itself: they are not read."""
    inner = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not inner:
        return ""
    shown = ", ".join(inner[:3]) + (f" and {len(inner) - 3} more" if len(inner) > 3 else "")
    pattern = folder / "*" / "*.png"
    return f"; its subfolders ({shown}) are not read: name them, or a pattern such as '{pattern}'"


def _same_folder(one: Path, two: Path) -> bool:
    try:
        return two.is_dir() and os.path.samefile(one, two)
    except OSError:
        return False
