"""Writing outputs so that no reader ever sees a half-written file, with provenance attached.

Every writer goes through `atomic_path`: the data is written to a temporary name in the same
directory and moved into place with `os.replace` (atomic on POSIX), so an interrupted run leaves
either the complete old file, the complete new file, or nothing — never a truncated one. That is
what lets a resumed run trust "the output exists" as "the output is complete".
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import errno
import io
import json
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from attnmap.errors import InputError

# Temporary files carry this marker so that a cleanup can tell them from real outputs, then the
# writer's host and pid, so that a cleanup deletes only what a process that is gone left behind.
TEMP_MARKER = ".attnmap-tmp-"


def _host_tag() -> str:
    import socket
    import zlib

    return f"{zlib.crc32(socket.gethostname().encode()):08x}"


def temporary_name(path: Path) -> Path:
    """``x.h5`` → ``.x.attnmap-tmp-<host>-<pid>-<id>.h5`` next to it."""
    tag = f"{_host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    return path.with_name(f".{path.stem}{TEMP_MARKER}{tag}{path.suffix}")


def is_stale_temporary(path: Path) -> bool:
    """Whether a temporary file's writer is gone: a dead pid on this host, or an old unnamed writer.

    A live run's temporaries (any process still running, or another host's) are never stale.
    """
    from attnmap.lock import process_alive

    tag = path.name.split(TEMP_MARKER, 1)[-1].split(".", 1)[0]
    parts = tag.split("-")
    if len(parts) != 3 or not parts[1].isdigit():
        return True  # written before temporaries named their writer
    if parts[0] != _host_tag():
        return False
    return not process_alive(int(parts[1]))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path``, else delete it.

    The temporary name keeps the final suffix (``x.h5`` → ``.x.attnmap-tmp-<id>.h5``) because some
    writers (PIL, tifffile, torch) choose the format from it.
    """
    path = Path(path)
    if path.is_dir():  # said before the work, naming the user's path rather than the temporary's
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file to write", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_name(path)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def write_json_atomic(path: str | Path, payload: object) -> Path:
    """Write ``payload`` as indented, key-sorted JSON atomically (stable bytes for equal payloads)."""
    text = json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    return write_bytes_atomic(path, text.encode())


PNG_COMPRESS_LEVEL = 3
"""zlib level of every PNG attnmap writes. PNG is lossless at every level: the level trades encoding
time for size. PIL's default, 6, takes about twice as long as 3 on heatmaps and nearly three times
as long on tissue crops, for files within a few percent of the size (level 3 is even smaller on
crops); on small slides, encoding the top/bottom patch crops at level 6 was most of a slide's time."""


def save_png(path: str | Path, image: np.ndarray, metadata: Mapping[str, str] | None = None) -> Path:
    """Save an RGB/RGBA/grey uint8 image as PNG with ``metadata`` as text chunks, atomically."""
    from PIL import Image, PngImagePlugin

    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise InputError(f"save_png needs a uint8 image, got dtype {array.dtype}")
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InputError(f"save_png needs an H×W, H×W×3 or H×W×4 image, got shape {array.shape}")
    info = PngImagePlugin.PngInfo()
    for key, value in (metadata or {}).items():
        info.add_text(str(key), str(value))
    with atomic_path(path) as temporary:
        Image.fromarray(np.ascontiguousarray(array)).save(
            temporary, format="PNG", pnginfo=info, compress_level=PNG_COMPRESS_LEVEL
        )
    return Path(path)


def read_png_text(path: str | Path) -> dict[str, str]:
    """The text chunks of a PNG (provenance written by `save_png`)."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return {str(key): str(value) for key, value in getattr(image, "text", {}).items()}


def write_csv_atomic(
    path: str | Path,
    header: list[str],
    rows: list[list[object]],
    provenance: Mapping[str, str] | None = None,
) -> Path:
    """Write a CSV atomically, with provenance in a sidecar ``<name>.json`` when given.

    A sidecar rather than comment lines keeps the CSV readable by every CSV reader.
    """
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    if provenance is not None:
        write_json_atomic(Path(str(path) + ".json"), dict(provenance))
    return write_bytes_atomic(path, buffer.getvalue().encode())


SPREADSHEETS = {".xlsx": "an Excel workbook", ".xlsm": "an Excel workbook", ".xls": "an Excel workbook",
                ".ods": "an OpenDocument spreadsheet"}
"""Spreadsheet files by suffix: given as a CSV they are binary, and "not UTF-8" hid what to do."""

# A workbook's first bytes: a zip (.xlsx, .ods) or an OLE2 compound file (.xls), whatever its name.
SPREADSHEET_MAGIC = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")


UNICODE_MARKS = (
    ("utf-32", "UTF-32", (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)),
    ("utf-16", "UTF-16", (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)),
)
"""(codec, name, byte order marks) of the encodings a CSV is read in when it starts with their mark."""


def read_csv_text(path: str | Path) -> str:
    """A CSV file's text, decoded whole as UTF-8 with or without a byte order mark (Excel's "CSV
    UTF-8"), or as UTF-16 or UTF-32 when it starts with that byte order mark (Excel's "Unicode
    Text" is UTF-16: the mark makes it unambiguous); `InputError` naming the line of the first byte
    that does not decode (Excel's plain "CSV" is cp1252 on Windows), or naming a spreadsheet as one
    to export as CSV.
    Decoded whole, not through a buffered reader, so that line is the file's."""
    path = Path(path)
    data = path.read_bytes()
    if path.suffix.lower() in SPREADSHEETS or data.startswith(SPREADSHEET_MAGIC):
        kind = SPREADSHEETS.get(path.suffix.lower(), "a spreadsheet")
        raise InputError(f'{path} is {kind}, not a CSV: export it as "CSV UTF-8"')
    # UTF-32 first: its little-endian mark begins with UTF-16's, and read as UTF-16 it decoded
    # without an error into text with a NUL after every character
    marked = (found[:2] for found in UNICODE_MARKS if data.startswith(found[2]))
    encoding, name = next(marked, ("utf-8-sig", "UTF-8"))
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        # the bytes before the error decode, BOM and all: their lines are the file's
        line = error.object[: error.start].decode(encoding).count("\n") + 1
        message = f'{path} is not a text CSV in {name} (line {line}): save it as "CSV UTF-8"'
        raise InputError(message) from error


def csv_dict_reader(path: str | Path, columns: Sequence[str] = ()) -> csv.DictReader:
    """A CSV file's rows as a `csv.DictReader`: the text as `read_csv_text` decodes it, the
    separator as `csv_delimiter` tells it from the header line (the labels and slide lists alike),
    the header's names stripped and the known ``columns`` in any case given their own spelling
    ("slide_id, label" with a space after the comma, or a spreadsheet's "Slide_ID,Label": such a
    column was lost without a word). `InputError` for two columns that would both be one of them."""
    text = read_csv_text(path)
    first, _, rest = text.partition("\n")
    hinted = separator_hint(first)
    if hinted is not None:
        text, first = rest, rest.partition("\n")[0]
    delimiter = hinted or csv_delimiter(first)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    named: dict[str, str] = {}
    names = []
    for name in (name.strip() for name in reader.fieldnames or []):
        known = name.lower() if name.lower() in columns else None
        if known is not None and known in named:
            raise InputError(f"{path} has the columns {named[known]!r} and {name!r}: keep one")
        if known is not None:
            named[known] = name
        names.append(known or name)
    reader.fieldnames = names
    return reader


def separator_hint(line: str) -> str | None:
    """The separator named by Excel's hint line ``sep=;`` (a CSV's first line, before the header),
    else None. Read as the header, that line hid every column the file has."""
    line = line.rstrip("\r")
    return line[4] if len(line) == 5 and line.startswith("sep=") else None


def csv_delimiter(header: str) -> str:
    """A CSV's separator told from its header line: ``,``, else ``;`` or tab when the header has
    no comma (Excel writes ";" in locales whose decimal mark is a comma; read with "," such a
    header was one unknown column)."""
    if "," in header:
        return ","
    return next((mark for mark in (";", "\t") if mark in header), ",")


def remove_stale_temporaries(directory: str | Path, pattern: str = "*", recursive: bool = True) -> int:
    """Delete temporary files that an interrupted run left behind in ``directory`` (recursively).

    ``pattern``: the start of the temporaries' names (e.g. ``.slide_1``). Only files whose writer
    is gone (`is_stale_temporary`) are deleted, so a concurrent live run keeps its own.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    removed = 0
    found = directory.rglob if recursive else directory.glob
    for candidate in found(f"{pattern}{TEMP_MARKER}*"):
        if candidate.is_file() and is_stale_temporary(candidate):
            candidate.unlink(missing_ok=True)
            removed += 1
    return removed


def writable_file(path: str | Path) -> Path:
    """``path`` as a Path to write a file to, its folder made; `InputError` when it is a folder or
    when a file stands where one of its folders should be.

    Why: writers otherwise fail mid-way with ``IsADirectoryError`` / ``FileNotFoundError`` from
    h5py or tifffile, naming a temporary file or nothing the user gave.
    """
    path = Path(path)
    check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def check_writable(path: str | Path) -> None:
    """`writable_file`'s checks without making the folder: for a command that may yet fail before
    it writes, and should then leave no empty folder behind."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a folder; give a file name inside it")
    check_no_file_above(path, path.parents)


def writable_folder(path: str | Path) -> Path:
    """``path`` as a folder that exists (made if missing); `InputError` when it, or a folder above
    it, is a file."""
    path = Path(path)
    check_no_file_above(path, (path, *path.parents))
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_no_file_above(path: Path, folders: Sequence[Path]) -> None:
    """`InputError` when the nearest of ``folders`` (innermost first) that exists is a file: ``path``
    could not be written there."""
    for folder in folders:
        if folder.exists():
            if not folder.is_dir():
                raise InputError(f"cannot write {path}: {folder} is a file, not a folder")
            return
