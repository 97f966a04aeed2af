"""Fingerprints: a digest of what made an output, stored in it, compared before reusing it.

Why: "the file exists" is not "the file is what this run would write". An output records the
identity of its inputs (size and content hash: `attnmap.file_hash` hashes each version of a
file once), the parameters that affect it, the version of the code that made it, and its upstream
outputs' fingerprints. A rerun recomputes an output exactly when the fingerprint differs, and can
say why: the stored inputs are kept next to the digest, so the changed keys can be named.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnmap.file_hash import content_sha256
from attnmap.stored import DamagedOutputError, stored_record

FINGERPRINT_KEY = "attnmap_fingerprint"
INPUTS_KEY = "attnmap_fingerprint_inputs"


def file_identity(path: str | Path) -> dict[str, Any]:
    """Size and sha256 of a file's bytes (`attnmap.file_hash`: hashed once per version).

    Not its mtime: a file touched or copied with the same bytes makes the same outputs, and one
    replaced by other bytes with its old mtime put back is told apart by its content. Not its path
    either: slides or weights moved to another disk make the same features (an output that names
    the path, like a slide's prediction, has the path in its own fingerprint).
    """
    from attnmap.checkpoint_files import shard_paths

    resolved = Path(path).expanduser().resolve()
    identity: dict[str, Any] = {"size": resolved.stat().st_size, "sha256": content_sha256(resolved)}
    shards = [shard for shard in shard_paths(resolved) if shard.is_file()]
    if shards:  # a sharded checkpoint's index: the weights are in its shards
        identity["shards"] = {shard.name: file_identity(shard) for shard in shards}
    return identity


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


@dataclass(frozen=True)
class Fingerprint:
    """The inputs of one output (a JSON-able mapping) and their digest."""

    inputs: Mapping[str, Any]
    value: str = field(init=False)

    def __post_init__(self) -> None:
        text = json.dumps(self.inputs, sort_keys=True, default=str)
        object.__setattr__(self, "value", hashlib.sha256(text.encode()).hexdigest()[:32])

    def record(self) -> dict[str, str]:
        """What a writer stores with the output (h5 attributes, PNG text, JSON provenance)."""
        return {FINGERPRINT_KEY: self.value, INPUTS_KEY: json.dumps(self.inputs, sort_keys=True, default=str)}

    def changes(self, stored: Mapping[str, str]) -> str | None:
        """None when ``stored`` (an output's record) was made with this fingerprint, else why not."""
        if stored.get(FINGERPRINT_KEY) == self.value:
            return None
        try:
            before = _flatten(json.loads(stored[INPUTS_KEY]))
        except (KeyError, TypeError, ValueError):
            return "made without a fingerprint"
        now = _flatten(json.loads(json.dumps(self.inputs, default=str)))
        changed = sorted(key for key in set(before) | set(now) if before.get(key) != now.get(key))
        if not changed:
            return "made by another fingerprint"
        shown = ", ".join(changed[:3]) + (f" +{len(changed) - 3}" if len(changed) > 3 else "")
        return f"{shown} changed"

    def check(self, path: str | Path, accept_foreign: bool = False, **verify: Any) -> str | None:
        """None when ``path`` is intact and was made with this fingerprint, else the reason to remake it.

        ``verify``: `stored_record` options (h5 ``datasets`` and ``rows``). ``accept_foreign``: an
        intact file that attnmap did not write (no attnmap provenance at all, e.g. CLAM's own
        patches or features brought by the user) is used as it is.
        """
        try:
            record = stored_record(path, **verify)
        except DamagedOutputError as error:
            try:  # made from other inputs (e.g. another patch count)? say that rather than "damaged"
                changed = self.changes(stored_record(path) or {}) if verify else None
            except DamagedOutputError:
                changed = None
            return changed if changed not in (None, "made without a fingerprint") else f"damaged: {error}"
        if record is None:
            return "missing"
        if accept_foreign and FINGERPRINT_KEY not in record and "attnmap_version" not in record:
            return None
        return self.changes(record)
