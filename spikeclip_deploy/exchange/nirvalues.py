"""Metadata values as NIR's HDF5 reader returns them, back to plain Python."""
from __future__ import annotations

import numpy as np


def plain(v):
    """A value as NIR's HDF5 reader returns it -> plain Python (bytes -> str, arrays and lists
    -> lists, numpy scalars -> Python ones)."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray):
        return [plain(x) for x in v.tolist()] if v.dtype == object else v.tolist()
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return v.item() if isinstance(v, np.generic) else v
