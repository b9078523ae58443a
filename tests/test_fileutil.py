"""Crash-safe file helpers: leftovers of dead owners are removed, live siblings are not."""
import errno
import fcntl
import os

import pytest

from spikeclip_deploy.fileutil import atomic_write, clean_stale, owned_tempdir, with_path


def hold_lock(path):
    """Simulate a live owner: an open fd with the exclusive lock (released by os.close)."""
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_clean_stale_removes_only_unlocked_entries(tmp_path):
    dead, alive, other = tmp_path / ".x.tmp-dead", tmp_path / ".x.tmp-alive", tmp_path / "keep"
    for d in (dead, alive, other):
        d.mkdir()
        (d / "f").write_text("data")
    fd = hold_lock(alive)
    try:
        clean_stale(tmp_path, ".x.tmp-*")
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".x.tmp-alive", "keep"]
    assert (alive / "f").read_text() == "data"


def test_clean_stale_restore_hook_sees_the_leftover_first(tmp_path):
    stale = tmp_path / ".x.old-1"
    (stale / "x").mkdir(parents=True)
    (stale / "x" / "manifest.json").write_text("{}")
    clean_stale(tmp_path, ".x.old-*", lambda e: os.rename(e / "x", tmp_path / "x"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]
    assert (tmp_path / "x" / "manifest.json").read_text() == "{}"


def test_atomic_write_removes_a_killed_writers_temporary(tmp_path):
    target = tmp_path / "state.pt"
    (tmp_path / ".state.pt.abc123.tmp").write_bytes(b"half")  # a writer died here
    atomic_write(target, lambda p: p.write_bytes(b"whole"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]
    assert target.read_bytes() == b"whole"


def test_atomic_write_failure_keeps_the_old_file_and_names_the_path(tmp_path):
    target = tmp_path / "state.pt"
    target.write_bytes(b"old")

    def disk_full(p):
        p.write_bytes(b"par")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write() reports it

    with pytest.raises(OSError) as info:
        atomic_write(target, disk_full)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]
    assert target.read_bytes() == b"old"


def test_owned_tempdir_is_removed_and_cleans_dead_siblings(tmp_path):
    (tmp_path / "job-dead").mkdir()
    alive = tmp_path / "job-alive"
    alive.mkdir()
    fd = hold_lock(alive)
    try:
        with owned_tempdir(tmp_path, "job-") as d:
            (d / "spikes.npy").write_bytes(b"0")
            # while in use, a second owner must not take it for a leftover
            clean_stale(tmp_path, "job-*")
            assert d.is_dir()
    finally:
        os.close(fd)
    assert [p.name for p in tmp_path.iterdir()] == ["job-alive"]


def test_with_path_adds_the_name_only_when_missing(tmp_path):
    named = OSError(errno.EACCES, "Permission denied", "/a")
    assert with_path(named, tmp_path) is named
    bare = with_path(OSError(errno.EFBIG, "File too large"), tmp_path / "f")
    assert (bare.errno, bare.filename) == (errno.EFBIG, str(tmp_path / "f"))
