"""The one check for a bundled model file: present, or an error naming the command that rebuilds it."""

from __future__ import annotations

from pathlib import Path


def require_bundled(path: str | Path, what: str, rebuild: str) -> Path:
    """``path`` if it is a file, else `FileNotFoundError` saying ``what`` is missing and ``rebuild``.

    Why one helper: the demo models (shapes ViT, tiny encoder, patch ViT, the two demo CLAMs) are
    files a source checkout can lack; each loader reports that the same way, with its own command.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, f"{what} not found (rebuild: {rebuild})", str(path))
    return path
