"""The CPU this runs on (its model, vector extensions and the instruction-set caps set in the
environment) and the threads that fit it: the cores that other work leaves free."""
from __future__ import annotations

import logging
import os
import platform
import time
import types
from collections.abc import Callable
from functools import cache, wraps

import torch

log = logging.getLogger(__name__)

#: environment variables that cap the instruction sets oneDNN, ATen, MKL and numba use (read at
#: start-up)
ISA_CAPS = ("DNNL_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY",
            "MKL_ENABLE_INSTRUCTIONS", "NUMBA_CPU_NAME")
#: the flags (of /proc/cpuinfo) that decide which kernels are fast: vector widths, int8 dot
#: products (VNNI), matrix units (AMX)
VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
                "amx_tile", "amx_int8", "amx_bf16")


@cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8").read().split("\n\n")[0]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in
            (line.partition(":") for line in text.splitlines())}


def cpu_model() -> str:
    """The CPU's model name."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def vector_extensions() -> list[str]:
    """Which of :data:`VECTOR_FLAGS` the CPU has."""
    flags = set(_cpuinfo().get("flags", "").split())
    return [f for f in VECTOR_FLAGS if f in flags]


def isa_caps() -> dict[str, str]:
    """The instruction-set caps set in the environment, and whether oneDNN is enabled (without
    it ``torch._int_mm`` takes its slow fallback)."""
    caps = {k: os.environ[k] for k in ISA_CAPS if k in os.environ}
    if not torch.backends.mkldnn.enabled:
        caps["onednn"] = "off"
    return caps


def machine_key() -> dict:
    """What a measured kernel choice depends on: CPU, flags, caps, torch and its threads."""
    return {"cpu": cpu_model(), "flags": _cpuinfo().get("flags", ""), "caps": isa_caps(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def _idle_ticks() -> tuple[int, int]:
    """(idle, total) clock ticks of all CPUs since boot (/proc/stat)."""
    with open("/proc/stat", encoding="ascii") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return ticks[3] + ticks[4], sum(ticks)  # idle + iowait


def free_cores(sample_s: float = 0.2) -> int:
    """The cores this process may use that other work leaves idle, at least 1: those of its
    affinity mask times the idle share of the CPUs' time over ``sample_s`` seconds (the
    1-minute load average where /proc/stat is missing)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        idle0, total0 = _idle_ticks()
        time.sleep(sample_s)
        idle1, total1 = _idle_ticks()
        busy = (os.cpu_count() or cores) * (1 - (idle1 - idle0) / max(1, total1 - total0))
    except (OSError, ValueError, IndexError):
        busy = os.getloadavg()[0]
    return max(1, min(cores, round(cores - busy)))


def set_threads(threads: int | None = None) -> int:
    """Sets torch's and numba's threads to ``threads``, or to :func:`free_cores` (so that a
    busy machine gets one thread, not several spinning against its other work); returns it."""
    import numba

    n = threads or free_cores()
    n = min(n, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(n)
    torch.set_num_threads(n)
    log.info("threads: %d (%s; %d cores, load average %.2f)", n,
             "--threads" if threads else "the cores other work leaves idle",
             os.cpu_count(), os.getloadavg()[0])
    return n


def by_threads(kernel: Callable) -> Callable:
    """A numba ``parallel=True`` kernel as a function that runs its serial compile (the same
    code, ``prange`` as ``range``, the same results) where the calling thread has one numba
    thread, else the parallel one. The serial compile never enters numba's thread pool, whose
    workqueue layer is not safe for two threads launching kernels at once (numba aborts the
    process where it sees that): a thread of one numba thread may run it beside another
    thread's parallel kernels."""
    from numba import get_num_threads, njit

    f = kernel.py_func
    name = f"{f.__name__}_serial"  # its own cache files: numba keys them by name, not options
    code = f.__code__.replace(co_name=name, co_qualname=f"{f.__qualname__}_serial")
    options = {k: v for k, v in kernel.targetoptions.items() if k != "nopython"}
    serial = njit(cache=True, **{**options, "parallel": False})(
        types.FunctionType(code, f.__globals__, name, f.__defaults__, f.__closure__))

    @wraps(f)
    def run(*args):
        return (serial if get_num_threads() == 1 else kernel)(*args)

    run.serial, run.parallel = serial, kernel
    return run
