"""Crash-safe files: content hashes, durable atomic writes, owned temporary directories.

Every temporary file or directory this package creates is held under an exclusive ``flock``
for as long as its owner lives. The lock dies with the process (``kill -9`` included), so the
next run can tell a leftover from a sibling still at work and removes only leftovers
(:func:`clean_stale`). Data is ``fsync``-ed before it is renamed into place, and the folder after.
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

log = logging.getLogger(__name__)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def with_path(exc: OSError, path: Path) -> OSError:
    """``exc`` naming ``path`` (a failed ``write()`` reports no file name of its own)."""
    if exc.filename is not None or exc.errno is None:
        return exc
    return type(exc)(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _lock_path(path: Path) -> int | None:
    """An fd holding ``path``'s exclusive lock, or None when a live process holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # gone, or another user's: not ours to judge
        return None
    if _try_lock(fd):
        return fd
    os.close(fd)
    return None


def clean_stale(parent: Path, pattern: str, restore: Callable[[Path], None] | None = None) -> None:
    """Remove entries of ``parent`` matching ``pattern`` whose owner has died (unlocked);
    ``restore(entry)`` may first rescue what such an entry holds."""
    if not parent.is_dir():
        return
    for entry in parent.glob(pattern):
        fd = _lock_path(entry)
        if fd is None:
            continue
        try:
            log.warning("removing %s, left by an interrupted run", entry)
            if restore is not None:
                restore(entry)
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        finally:
            os.close(fd)


def fsync_path(path: Path) -> None:
    """Flush a file, or a directory entry table, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every file and folder under ``root`` (before renaming it into place)."""
    for folder, _, files in os.walk(root):
        for name in files:
            fsync_path(Path(folder) / name)
        fsync_path(Path(folder))


def write_bytes(path: Path, data: bytes) -> None:
    """Plain write whose errors name ``path`` (used inside an owned temporary directory)."""
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise with_path(exc, path) from None


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)``, flush it to disk, rename it onto ``path``; on failure nothing is left
    and the error names ``path``. Temporaries of killed writers are removed first."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(path.parent, f".{glob_escape(path.name)}.*.tmp")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise with_path(exc, path) from None
    fcntl.flock(fd, fcntl.LOCK_EX)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        fsync_path(Path(tmp))
        os.replace(tmp, path)
        fsync_path(path.parent)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise with_path(exc, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def write_cache(path: Path, write: Callable[[Path], None], what: str) -> bool:
    """:func:`atomic_write` for a cache, which the caller can do without: a cache that cannot be
    written (read-only, full, not a folder) is a warning naming ``what`` and ``path``, and
    False."""
    try:
        atomic_write(path, write)
    except OSError as exc:
        log.warning("cannot write the %s cache %s (%s); continuing without it (set "
                    "$SPIKECLIP_CACHE to a writable folder to keep one)", what, path, exc)
        return False
    return True


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


@contextmanager
def owned_tempdir(parent: Path | None, prefix: str) -> Iterator[Path]:
    """A fresh directory ``parent/PREFIX*`` (the system temp folder when ``parent`` is None),
    locked while in use and removed afterwards; leftovers of killed owners are removed first."""
    parent = Path(parent if parent is not None else tempfile.gettempdir())
    try:
        parent.mkdir(parents=True, exist_ok=True)
        clean_stale(parent, f"{glob_escape(prefix)}*")
        path = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    except OSError as exc:
        raise with_path(exc, parent) from None
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


@contextmanager
def destination_lock(dest: Path) -> Iterator[None]:
    """Serialise writers of ``dest``: an exclusive lock on ``.NAME.lock`` beside it, removed on
    release (a waiter that locked a removed file's inode retries on the new one)."""
    lock = dest.parent / f".{dest.name}.lock"
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())
