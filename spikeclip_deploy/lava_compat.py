"""Make lava-nc 0.10.0 importable on Python 3.11, without touching site-packages.

A meta-path finder rewrites two lava modules' source before they execute:

* ``lava/magma/compiler/var_model.py``: Python 3.11 rejects dataclass fields whose default is an
  unhashable instance (``x: ByteEncoder = ByteEncoder()``); they become
  ``field(default_factory=...)``.
* ``lava/magma/runtime/message_infrastructure/multiprocessing.py`` calls
  ``mp.set_start_method('fork')`` at import, which raises "context has already been set" in a
  process where anything fixed the start method first (e.g. training, then verifying, in one
  Python process); it now sets it only when none is set.

:func:`install` is idempotent and is called before every lava import in this package.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys

_DEFAULT = re.compile(r"^(\s+\w+\s*:\s*(\w+))\s*=\s*\2\(\)\s*$", re.MULTILINE)


def rewrite_mutable_defaults(source: str) -> str:
    """``name: Cls = Cls()`` -> ``name: Cls = dataclasses.field(default_factory=Cls)``."""
    return _DEFAULT.sub(r"\1 = __import__('dataclasses').field(default_factory=\2)", source)


def rewrite_start_method(source: str) -> str:
    """``mp.set_start_method('fork')`` -> only when no start method is set yet."""
    return source.replace("mp.set_start_method('fork')",
                          "mp.get_start_method(allow_none=True) or mp.set_start_method('fork')")


_PATCHED = {"lava.magma.compiler.var_model": rewrite_mutable_defaults,
            "lava.magma.runtime.message_infrastructure.multiprocessing": rewrite_start_method}


class _Loader(importlib.machinery.SourceFileLoader):
    """Compiles the rewritten source every time (never the unpatched cached bytecode)."""

    def get_code(self, fullname):  # type: ignore[override]
        path = self.get_filename(fullname)
        source = _PATCHED[fullname](importlib.util.decode_source(self.get_data(path)))
        return compile(source, path, "exec", dont_inherit=True)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in _PATCHED:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None:
            return None
        spec.loader = _Loader(fullname, spec.origin)
        return spec


def install() -> None:
    if sys.version_info >= (3, 11) and not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


