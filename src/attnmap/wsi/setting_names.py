"""How a stage's message names a setting: as the `wsi run` configuration key it is
(``patching.padding: false``) or as the option of the single-stage command the user ran
(``--no-padding``).

Why its own module: the stages (and the tissue and patch checks under them) run under both
`wsi run` (a YAML file) and `wsi segment` / `patch` / `features` (options), and a hint is only
acted on in the form the user gives settings in. The command says which (`option_names`, with its
flag renamings); `setting` is the one place that spells a setting.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar

_FLAGS: ContextVar[Mapping[str, str] | None] = ContextVar("attnmap_option_names", default=None)
_UNSET = object()


@contextlib.contextmanager
def option_names(flags: Mapping[str, str]) -> Iterator[None]:
    """Within this block, settings are named as command-line options; ``flags`` maps a dotted key
    (``patching.level``) to its option's name where that is not the field's (``patch-level``)."""
    token = _FLAGS.set(flags)
    try:
        yield
    finally:
        _FLAGS.reset(token)


def setting(key: str, value: object = _UNSET) -> str:
    """The setting ``key`` ("section.field"), with ``value`` if given, as the user gives settings."""
    flags = _FLAGS.get()
    if flags is None:
        if value is _UNSET:
            return key
        if isinstance(value, bool):
            return f"{key}: {str(value).lower()}"
        return f"{key}: {value:g}" if isinstance(value, float) else f"{key}: {value}"
    flag = flags.get(key, key.rsplit(".", 1)[-1].replace("_", "-"))
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--no-{flag}"
    if value is _UNSET:
        return f"--{flag}"
    return f"--{flag} {value:g}" if isinstance(value, float) else f"--{flag} {value}"


_KEY = re.compile(r"\b(?:segmentation|patching)\.[a-z_]+\b")
"""A stage parameter's key as a fingerprint's reason spells it (``patching.patch_size changed``)."""


_ENCODER_KEY = re.compile(r"\bencoder\.(encoder|checkpoint|input_size|encoder_args|folder)\b(?:\.[\w.-]+)?")
"""A features fingerprint's encoder key (``encoder.input_size``, ``encoder.checkpoint.sha256``): its
encoder identity, not the configuration, so each is named as the ``features`` setting it comes from
(a folder encoder's files are its ``features.encoder``; ``encoder.seed``, no option, is left as is)."""
_PRECISION = re.compile(r"\bprecision\b(?=,| \+\d| changed)")


def settings_in(reason: str) -> str:
    """``reason`` (why a stage's output was remade) with each stage parameter's key named by
    `setting`: the reason is the fingerprint's, which knows nothing of how the user gave it."""
    reason = _KEY.sub(lambda found: setting(found.group(0)), reason)
    reason = _PRECISION.sub(lambda found: setting("features.precision"), reason)
    field = {"folder": "encoder"}
    reason = _ENCODER_KEY.sub(
        lambda found: setting(f"features.{field.get(found.group(1), found.group(1))}"), reason
    )
    return _REPEATED.sub(r"\1", reason)  # an encoder file's size and digest: one setting, named once


_REPEATED = re.compile(r"(?<![\w-])([^,\s]+)(?:, \1)+(?=[, ]|$)")
