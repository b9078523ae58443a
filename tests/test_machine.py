"""The machine's identity (the key of the emulator's kernel cache) and the threads that fit it:
the cores other work leaves idle, worked by hand from /proc/stat ticks."""
import os

import pytest
import torch

from spikeclip_deploy import machine
from spikeclip_deploy.backends import emulator_gemm


@pytest.mark.parametrize("idle, cores, want", [
    ((0, 0, 100, 200), 4, 2),  # half the time idle: 2 of 4 cores busy
    ((0, 0, 0, 200), 4, 1),  # none idle: at least 1
    ((0, 0, 200, 200), 4, 4),  # all idle
    ((0, 0, 150, 200), 2, 2),  # 3/4 idle of 2 cores: 0.5 busy, rounds to 0
])
def test_free_cores_by_hand(monkeypatch, idle, cores, want):
    """Busy cores = CPUs x (1 - idle ticks / ticks) over the sample; free = the rest."""
    ticks = iter([(idle[0], idle[1]), (idle[2], idle[3])])
    monkeypatch.setattr(machine, "_idle_ticks", lambda: next(ticks))
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert machine.free_cores(0) == want


def test_set_threads_sets_torch_and_numba(monkeypatch):
    import numba

    monkeypatch.undo()  # the real set_threads (conftest keeps the CLI's from the process)
    before = torch.get_num_threads()
    try:
        assert machine.set_threads(1) == 1
        assert torch.get_num_threads() == numba.get_num_threads() == 1
    finally:
        machine.set_threads(before)


def test_an_isa_cap_changes_the_kernel_cache(monkeypatch):
    """A capped run (DNNL_MAX_CPU_ISA, ATEN_CPU_CAPABILITY, oneDNN off) never reads the
    uncapped run's timings: each has its own cache file."""
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    plain = emulator_gemm._cache_path()
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")
    capped = emulator_gemm._cache_path()
    with torch.backends.mkldnn.flags(enabled=False):
        off = emulator_gemm._cache_path()
    assert len({plain, capped, off}) == 3
    assert machine.isa_caps() == {"DNNL_MAX_CPU_ISA": "AVX2"}


def test_another_version_of_the_kernels_has_its_own_kernel_cache(monkeypatch):
    """Timings cached by other code of the kernels are never read: the code is in the key."""
    plain = emulator_gemm._cache_path()
    monkeypatch.setattr(emulator_gemm, "kernels_code", lambda: "another version")
    assert emulator_gemm._cache_path() != plain


def test_by_threads_runs_the_serial_compile_on_one_thread():
    """A thread of one numba thread runs the serial compile (never numba's pool, which two
    threads may not enter at once), a thread of more the parallel one: the same results."""
    import threading

    import numba
    import numpy as np
    from numba import njit, prange

    def plus_row(x, out):
        for i in prange(len(x)):
            out[i] = x[i] + i

    kernel = machine.by_threads(njit(parallel=True, nogil=True)(plus_row))
    x = np.arange(1000.0)
    want = x + np.arange(1000)
    ran = {}

    def one_thread():
        numba.set_num_threads(1)
        ran["one"] = np.empty_like(x)
        kernel(x, ran["one"])

    worker = threading.Thread(target=one_thread)
    worker.start()
    worker.join()
    assert list(kernel.serial.signatures) and not list(kernel.parallel.signatures)
    numba.set_num_threads(2)
    ran["two"] = np.empty_like(x)
    kernel(x, ran["two"])
    assert list(kernel.parallel.signatures)
    assert (ran["one"] == want).all() and (ran["two"] == want).all()
