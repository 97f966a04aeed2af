"""The explain_cli_sweep's input cases: odd folders, names, sizes and output folders (see
explain_cli_sweep.py)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from PIL import Image


def input_cases(s) -> None:
    e, im = s.explain, s.images
    m = ["--method", "rollout"]
    _, _, mixed = e(
        "mixed folder (broken files among images)", [im["mixed"]], m, expect="error"
    )  # names them
    readable = ["good", "photo", "UPPER", "grey", "alpha", "palette"]
    missing = [name for name in readable if not (mixed / f"{name}_rollout.npy").is_file()]
    s.rec.record(
        "wrong" if missing else "ok",
        "mixed folder: its readable images explained",
        f"no maps of {', '.join(missing)}" if missing else "",
        "ok",
    )
    e(
        "folder with readme, .DS_Store, ._a.png, a subfolder",
        [im["clean_mixed"]],
        m,
        expected_inputs=[im["clean_mixed"] / "a.png"],
    )
    e("zero-byte file given", [im["mixed"] / "zero.png"], m, expect="error")
    e("corrupt png given", [im["mixed"] / "corrupt.png"], m, expect="error")
    e("truncated jpeg given", [im["mixed"] / "truncated.jpg"], m, expect="error")
    e("html named .png given", [im["mixed"] / "fake.png"], m, expect="error")
    e("text file given", [im["mixed"] / "notes.txt"], m, expect="error")
    e("broken symlink given", [im["mixed"] / "broken_link.png"], m, expect="error")
    e("symlink given", [im["mixed"] / "link.png"], m)
    e("hidden file given", [im["mixed"] / ".hidden.png"], m)
    e(
        "unreadable file (chmod 0; root reads it)",
        [im["unreadable"]],
        m,
        expected_inputs=sorted(im["unreadable"].iterdir()),
    )
    e("empty folder", [im["empty_dir"]], m, expect="error")
    e("folder of text files", [im["only_text"]], m, expect="error")
    e("missing path", [s.root / "nope.png"], m, expect="error")
    e(
        "glob pattern (not expanded by a shell)",
        [str(im["plain"] / "*.png")],
        m,
        expected_inputs=sorted(im["plain"].glob("*.png")),
    )
    e("glob pattern matching nothing", [str(im["plain"] / "*.jpg")], m, expect="error")
    e("same file twice", [im["one"], im["one"]], m, expected_inputs=[im["one"]])
    e("a file and its folder", [im["one"], im["plain"]], m, expected_inputs=sorted(im["plain"].iterdir()))
    e("same stem in two subfolders", [im["stem1"], im["stem2"]], m)
    e(
        "names of 200-240 bytes",
        [im["long"]],
        ["--method", "transformer_attribution"],
        expected_inputs=sorted(im["long"].iterdir()),
    )
    relative, classes = s.out(), []
    for done in ([im["stem1"]], [im["stem1"], im["stem2"]]):  # "a.png" relative to two working folders
        os.chdir(done[-1].parent)
        try:
            run = s.explain(
                "relative", ["a.png"], m, out=relative, record=False, expected_inputs=done, n_methods=None
            )
            classes.append(run[:2])
        finally:
            os.chdir(s.root)
    owners = sorted(json.loads(p.read_text())["image"] for p in relative.glob("*.npy.json"))
    both = [str(im["stem1"]), str(im["stem2"])]
    failed = [f"{cls}: {detail}" for cls, detail in classes if cls != "ok"]
    s.rec.record(
        next((cls for cls, _ in classes if cls != "ok"), "ok" if owners == both else "wrong"),
        "a.png relative to two working folders, one --out",
        "; ".join(failed) or ("" if owners == both else f"maps kept: {owners}"),
        "ok",
    )
    shared = s.out()
    e("same stem, two runs into one folder: first", [im["stem1"]], m, out=shared)
    e(
        "same stem, two runs into one folder: second",
        [im["stem2"]],
        m,
        out=shared,
        expected_inputs=[im["stem1"], im["stem2"]],
    )
    e("same stem, two runs into one folder: both again", [im["stem1"], im["stem2"]], m, out=shared)
    e("a.png, a.jpg and a_2.png", [im["two_ext"]], m, expected_inputs=sorted(im["two_ext"].iterdir()))
    e("A.png and a.png", [im["case"]], m, expected_inputs=sorted(im["case"].iterdir()))
    e(
        "spaces, unicode, quotes, leading dash",
        [im["names"]],
        m,
        expected_inputs=sorted(im["names"].iterdir()),
    )
    for name in ("one_pixel.png", "tiny8.png"):
        e(f"{name} (smaller than a patch)", [im["sizes"] / name], m, expect="error")
    for name in ("patch16.png", "wide.png", "tall.png", "thin_wide.png", "big.png"):
        e(f"{name}", [im["sizes"] / name], m)
        e(f"{name} --on original", [im["sizes"] / name], [*m, "--on", "original"])
    e("wide.png lrp --on original", [im["sizes"] / "wide.png"], ["--method", "lrp", "--on", "original"])
    e(
        "modes: CMYK, 16-bit, float TIFF, black",
        [im["modes"]],
        m,
        expected_inputs=sorted(im["modes"].iterdir()),
    )
    e("an all-black image, every method", [im["black"]], ["--method", "all"], n_methods=8)
    e("sizes on the HF model", [im["sizes"] / "wide.png"], m, model="hf")
    e(
        "batch of differing sizes, batch 3",
        [im["plain"]],
        [*m, "--batch-size", "3"],
        expected_inputs=sorted(im["plain"].iterdir()),
    )
    for name in ("wide.png", "big.png", "tall.png"):
        e(
            f"{name} --on original --no-legend: the original's size",
            [im["sizes"] / name],
            [*m, "--on", "original", "--no-legend"],
            check=_picture_size(im["sizes"] / name),
        )
    e(
        "--no-legend: the model's input size",
        [im["one"]],
        [*m, "--no-legend"],
        check=_picture_size(None, (32, 32)),
    )
    e(
        "EXIF-rotated JPEG --on original --no-legend",
        [im["exif"]],
        [*m, "--on", "original", "--no-legend"],
        check=_picture_size(im["exif"]),
    )
    linked = s.root / "linked_dir"
    os.symlink(im["plain"], linked)
    e("a symlink to a folder", [linked], m, expected_inputs=sorted(linked.iterdir()))
    e("a folder and a symlink to it", [im["plain"], linked], m, expected_inputs=sorted(im["plain"].iterdir()))
    held = s.out()
    held.mkdir(parents=True)
    (held / ".attnmap.lock").write_text(
        json.dumps({"pid": os.getppid(), "host": os.uname().nodename, "command": "attnmap explain"})
    )
    e("--out locked by a live run", [im["one"]], m, out=held, expect="error")
    e(
        "--workers 1, same file twice",
        [im["one"], im["one"]],
        [*m, "--workers", "1"],
        expected_inputs=[im["one"]],
    )
    # the output folder among the inputs
    folder = s.root / "selfref"
    shutil.copytree(im["plain"], folder)
    inputs = sorted(folder.iterdir())
    e("--out inside the input folder", [folder], m, out=folder / "maps", expected_inputs=inputs)
    e("--out inside the input folder, rerun", [folder], m, out=folder / "maps", expected_inputs=inputs)
    for label in ("--out is the input folder", "--out is the input folder, rerun"):
        e(label, [folder], m, out=folder, expect="error", expected_inputs=inputs)
    own = s.root / "ownfolder"
    own.mkdir()
    shutil.copy(im["one"], own / "img0.png")
    e("--out is the image's own folder (file given)", [own / "img0.png"], m, out=own)
    e("  ... rerun", [own / "img0.png"], m, out=own)


def _picture_size(original: Path | None, size: tuple[int, int] | None = None):
    """A check: every overlay PNG is ``size`` (width, height) or the original image's upright size."""

    def check(out: Path) -> list[str]:
        from PIL import ImageOps

        want = size if original is None else ImageOps.exif_transpose(Image.open(original)).size
        return [
            f"{p.name} is {Image.open(p).size}, expected {want}"
            for p in sorted(out.glob("*.png"))
            if Image.open(p).size != tuple(want)
        ]

    return check
