"""A ``--target`` given as text: a class index, or a class name looked up among a model's names.

Why one module: `attnmap explain` (a ViT's ``label_names`` / ``id2label``) and `attnmap mil attention`
(the ``class_names`` `mil train` recorded, or ``--class-names``) each had their own lookup, so the
same ``--target`` was found by one command and refused by the other. Pure and free of torch, so
either side imports it without the other's packages.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from attnmap.errors import InputError

_INDEX = re.compile(r"[+-]?[0-9]+")
LISTED_NAMES = 20  # more than this (ImageNet's 1000) would bury the message: the similar ones only


def target_text(text: str) -> int | str:
    """``--target``'s text as a class index (an integer, whitespace around it ignored) or a name."""
    text = text.strip()
    return int(text) if _INDEX.fullmatch(text) else text


def class_index(name: str, names: Sequence[str]) -> int:
    """The index of the class called ``name`` in ``names`` (non-empty): whitespace around ``name``
    ignored, the exact name first, else the one name equal ignoring case. `InputError` when two
    classes share it, or when none has it (naming the similar names, and all of them when few)."""
    wanted = name.strip()
    for found in ([i for i, n in enumerate(names) if n == wanted],
                  [i for i, n in enumerate(names) if n.casefold() == wanted.casefold()]):
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise InputError(f"target {wanted!r} names classes {found}: give the class index")
    folded = [n.casefold() for n in names]
    close = difflib.get_close_matches(wanted.casefold(), folded, n=5, cutoff=0.6)
    similar = [names[folded.index(match)] for match in close]  # the closest first
    hint = f"; similar: {', '.join(map(repr, similar))}" if similar else ""
    listed = f"; the classes are {', '.join(map(repr, names))}" if len(names) <= LISTED_NAMES else ""
    raise InputError(f"target {wanted!r} is not one of the model's {len(names)} class names{hint}{listed}")
