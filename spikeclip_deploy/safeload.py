"""Reading a torch-pickled file that a user may have been handed, without running its code.

``torch.load(weights_only=True)`` unpickles only an allow-list: tensors and their storages,
``dict``/``list``/``tuple``/``OrderedDict``, ``str``/``bytes``/numbers/``bool``/``None``
(torch's own list, to which nothing is added here). A file that names any other Python object
(``os.system``, a class with a ``__reduce__``, ...) is refused before that object is looked up,
so nothing in it runs.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")  # how torch's refusal names the object


def refused(path: Path, exc: pickle.UnpicklingError, what: str, fix: str) -> CheckpointError:
    """The one-line error for a pickle that ``weights_only=True`` refused (torch's own message
    spans many lines), naming the object it names (or saying the file is not one)."""
    found = _GLOBAL.search(str(exc))
    if not found:  # garbage, not a refused object
        return CheckpointError(f"cannot read {path} as {what} (not a torch file of tensors); "
                               f"{fix}")
    return CheckpointError(f"refused to load {path}: it names the Python object "
                           f"{found.group(1)}, which {what} never holds (unpickling it could run "
                           f"code; nothing from the file was run); {fix}")


def load_tensors_only(path: Path, what: str, fix: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a file that names a Python object
    outside the allow-list, or that is not a torch file at all, is a one-line
    :class:`~.errors.CheckpointError` saying ``what`` it should be and the ``fix``."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise refused(path, exc, what, fix) from None
    except Exception as exc:  # noqa: BLE001 - a garbled file raises nearly any exception type
        text = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"cannot read {path} as {what} ({type(exc).__name__}: {text}); "
                              f"{fix}") from None
