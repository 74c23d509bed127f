"""The provenance record of a separated stem: which input file, separated with which options.

``stemsep separate`` stores :func:`provenance` (one line of JSON) in the comment tag of every stem
it writes; :func:`read_provenance` reads it back. It is how a rerun knows which tracks are done
(same input, same options), how a folder search tells stemsep's stems from inputs, and how a
staging sweep (:mod:`stemsep.io.staging`) tells stemsep's files from a user's. It lives in io, next
to the comment tag it is stored in, so that those readers need nothing above io.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from stemsep.io.audio import read_comment


def input_identity(path: Path) -> dict:
    """Which input file produced a track: its absolute path, size and modification time."""
    stat = path.stat()
    return {"input": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def provenance(identity: dict, key: dict) -> str:
    """The record stored in every written stem's comment tag (JSON, one line)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return json.dumps({"stemsep": "separate", **identity, "options": digest}, sort_keys=True)


def read_provenance(path: Path) -> dict | None:
    """The record :func:`provenance` stored in ``path``, or None."""
    text = read_comment(path)
    try:
        record = json.loads(text) if text else None
    except ValueError:
        return None
    return record if isinstance(record, dict) and record.get("stemsep") == "separate" else None
