"""Exceptions raised for problems with what the user gave us.

`InputError` is a `ValueError`, so library users can catch it as one; the CLI turns it into a
one-line message and exit status 2 (a traceback only with ``--debug``).
"""

from __future__ import annotations


class AttnmapError(Exception):
    """Base class of every error attnmap raises on purpose."""


class InputError(AttnmapError, ValueError):
    """A user input (file, model, option, tensor) is missing, malformed or unsupported."""


class UnsupportedModelError(InputError):
    """The model lacks something a method needs (attention blocks, an LRP rule for a layer, ...)."""
