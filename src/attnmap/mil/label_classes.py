"""The one rule that turns a labels CSV's labels (texts) into class indices and class names.

- A label is a *number* when written in ASCII decimal notation (``2``, ``-1``, ``2.0``, ``0.5``,
  ``1e3``); anything else (``tumour``, ``NaN``, ``١``: digits of other scripts) is a *name*.
- Numbers mixed with names are refused: a classifier's classes are one or the other, and a mix is
  usually a stray cell (``NaN`` from a spreadsheet, a header written twice).
- All numbers whole (``1`` and ``1.0`` alike): they are the class indices 0..C-1 themselves, and
  every index must have a slide (a class without slides would be a dead output).
- Other numbers: classes in order of value (``2.5`` and ``2.50`` are one class).
- Names: numbered in natural order (digit runs by value: ``grade 2`` before ``grade 10``); names
  differing only in case or spacing are refused, since they would train as two classes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal
from itertools import islice

from attnmap.errors import InputError

_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")  # ASCII digits only


def class_indices(raw: Sequence[str]) -> tuple[list[int], list[str]]:
    """(the class index of each label, the name of each class index) by the module's rule."""
    numbers = [label for label in raw if _NUMBER.fullmatch(label)]
    if numbers and len(numbers) < len(raw):
        names = sorted({label for label in raw if not _NUMBER.fullmatch(label)})
        raise InputError(
            f"labels mix numbers ({', '.join(sorted(set(numbers))[:3])}) and names "
            f"({', '.join(map(repr, names[:3]))}); write every label one way (class indices 0..C-1, "
            "or names)"
        )
    if numbers:
        values = [Decimal(label) for label in raw]
        if all(value == value.to_integral_value() for value in values):
            for label, value in zip(raw, values, strict=True):
                if value.adjusted() >= 18:  # int() of 1e99999999 would take minutes
                    raise InputError(f"label {label} is too large for a class index; whole-number labels "
                                     "are the class indices 0..C-1")
            return _whole_numbers([int(value) for value in values])
        order = sorted(set(values))
        first = {}
        for label, value in zip(raw, values, strict=True):
            first.setdefault(value, label)  # the first spelling names the class
        return [order.index(value) for value in values], [first[value] for value in order]
    class_names = sorted(set(raw), key=lambda name: (_natural_key(name), name))
    folded: dict[str, str] = {}
    for name in class_names:
        other = folded.setdefault(" ".join(name.casefold().split()), name)
        if other != name:
            raise InputError(f"labels {other!r} and {name!r} differ only in case or spacing; "
                             "write each class one way")
    index = {name: position for position, name in enumerate(class_names)}
    return [index[label] for label in raw], class_names


def _whole_numbers(labels: list[int]) -> tuple[list[int], list[str]]:
    if min(labels) < 0:
        raise InputError(f"integer labels must be 0..C-1, found {min(labels)}")
    present = set(labels)
    n_classes = max(labels) + 1
    if len(present) < n_classes:
        # the first five gaps, found without listing 0..max (a label may be 10^30): fewer than
        # five gaps means fewer than len(present) + 5 indices
        unused = [str(c) for c in islice((c for c in range(n_classes) if c not in present), 5)]
        raise InputError(f"integer labels are class indices 0..{n_classes - 1}, but no slide has label "
                         f"{', '.join(unused)}; renumber the classes 0..C-1")
    return labels, [str(c) for c in range(n_classes)]


def _natural_key(name: str) -> list[object]:
    """Text parts and ASCII digit runs (by value) alternate: comparable between any two names."""
    parts = re.split(r"([0-9]+)", name.casefold())
    return [int(part) if position % 2 else part for position, part in enumerate(parts)]
