"""What names a group and its content: keys, labels, and content hashes.

Pure: a group's values become a file-system-safe key (a hash of their
canonical JSON), so group values are data, never paths; a table's rows become
64-bit hashes, and a run of rows a content hash (a partition's fingerprint).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd


def jsonable(value: Any) -> Any:
    """A group value as plain JSON (numpy scalars, dates and NaN included)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (pd.Timestamp, dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, float) and value != value:
        return None
    return value


def group_key(values: Sequence[Any]) -> str:
    """Stable file-system-safe key of a group: a hash of its canonical JSON."""
    canonical = json.dumps([jsonable(v) for v in values], ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(canonical.encode("utf-8"), digest_size=10).hexdigest()


def group_label(columns: Sequence[str], values: Sequence[Any]) -> str:
    """``Store=2,Brand=tropicana``: how a group is named in messages and --groups."""
    return ",".join(f"{c}={jsonable(v)}" for c, v in zip(columns, values))


def digest(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


# -- content hashes ------------------------------------------------------------

def row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """One 64-bit hash per row, over every column (vectorised)."""
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


def schema_signature(frame: pd.DataFrame) -> str:
    return digest([(str(c), str(t)) for c, t in frame.dtypes.items()])


def slice_hash(schema: str, hashes: np.ndarray) -> str:
    """Content hash of a run of rows (a group's partition)."""
    h = hashlib.blake2b(schema.encode(), digest_size=12)
    h.update(np.ascontiguousarray(hashes).tobytes())
    return h.hexdigest()
