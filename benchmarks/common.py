"""Helpers shared by the measuring scripts of the speed benchmark.

Machine information, CPU and wall clocks, peak memory (growth of VmHWM after a
reset through ``/proc/self/clear_refs``, Linux only), an address-space guard that
turns an out-of-memory measurement into a status, timing of several callables
round-robin, and JSON input/output. Importing this module sets one thread
(``OMP_NUM_THREADS=1``) before torch is imported.
"""

import ctypes
import datetime
import gc
import json
import math
import os
import platform
import random
import resource
import statistics
import time
import warnings
from pathlib import Path

# one thread everywhere (the machine is shared); set before torch is imported
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import torch  # noqa: E402

torch.set_num_threads(1)
# metatomic_ase symmetrizes a NaN stress of non-periodic systems on every call
warnings.filterwarnings("ignore", category=RuntimeWarning)
SEED = 42


def log(message: str) -> None:
    """Print ``message`` with the time of day."""
    now = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"[{now}] {message}", flush=True)


def _first_field(path: str, prefix: str) -> str | None:
    """The text after the first ``prefix`` line of ``path`` (None if absent)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info() -> dict:
    """Date, platform, CPU, cores, memory, versions, threads and load average."""
    import metatrain

    try:
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    memory = _first_field("/proc/meminfo", "MemTotal")
    return {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "platform": platform.platform(),
        "cpu": _first_field("/proc/cpuinfo", "model name") or "unknown",
        "cores": os.cpu_count(),
        "memory (GiB)": f"{int(memory.split()[0]) / 2**20:.1f}" if memory else "n/a",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "metatrain": metatrain.__version__,
        "torch threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "load average at start (1/5/15 min)": load,
    }


def cpu_minutes() -> float:
    """CPU minutes (user + system) of this process and its finished children."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total / 60


def clock() -> tuple[float, float, float]:
    """(wall, CPU = user + system, system) seconds of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), usage.ru_utime + usage.ru_stime, usage.ru_stime


# ---------------------------------------------------------------- memory

try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:
    _LIBC = None


def status_mb(key: str) -> float:
    """A ``/proc/self/status`` field (``VmRSS``, ``VmHWM``, ...) in MB."""
    value = _first_field("/proc/self/status", key)
    if value is None:
        raise KeyError(key)
    return int(value.split()[0]) / 1024


def _can_reset_peak() -> bool:
    """Whether the peak resident set can be reset (Linux ``clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        status_mb("VmHWM")
        return True
    except (OSError, KeyError):
        return False


MEMORY = _can_reset_peak()


def reset_peak() -> float:
    """Give freed memory back to the system and reset the peak resident set;
    returns the current resident set (MB)."""
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    return status_mb("VmRSS")


def available_mb() -> float:
    """MemAvailable of the machine (MB), infinite where unknown."""
    value = _first_field("/proc/meminfo", "MemAvailable")
    return int(value.split()[0]) / 1024 if value else float("inf")


def memory_budget(max_memory_mb: float) -> float:
    """MB a measurement may add: the cap, and 2.5 GB less than what is free."""
    return min(max_memory_mb, available_mb() - 2500)


class OutOfMemory(Exception):
    """A measurement needed more memory than its budget."""


class memory_guard:
    """Lower the soft address-space limit so that a measurement needing more than
    ``budget_mb`` fails with an exception instead of calling the OOM killer."""

    def __init__(self, budget_mb: float):
        self.budget_mb = budget_mb

    def __enter__(self):
        self.previous = resource.getrlimit(resource.RLIMIT_AS)
        if math.isfinite(self.budget_mb):
            limit = int((status_mb("VmSize") + self.budget_mb) * 2**20)
            if self.previous[1] != resource.RLIM_INFINITY:
                limit = min(limit, self.previous[1])
            resource.setrlimit(resource.RLIMIT_AS, (limit, self.previous[1]))
        return self

    def __exit__(self, kind, value, traceback):
        resource.setrlimit(resource.RLIMIT_AS, self.previous)
        gc.collect()
        if kind is not None and issubclass(kind, (RuntimeError, MemoryError)):
            if "alloc" in str(value).lower() or kind is MemoryError:
                raise OutOfMemory(str(value).splitlines()[0][:200]) from value
        return False


# ---------------------------------------------------------------- timing


def measure(fn, repeats, min_time=1.0, long_call=15.0, warmup=1) -> dict:
    """Median wall, CPU and system times (ms) of ``fn()``. The ``warmup`` first
    calls are not timed (TorchScript models need ~3 to be optimized); the last of
    them gives the peak memory growth (``mem``, MB) and the first its CPU time
    (``first``). Calls longer than ``long_call`` seconds (wall) are timed twice
    only; otherwise at least ``repeats`` times and ``min_time`` seconds."""
    first = start = None
    for i in range(warmup):
        if MEMORY and i == warmup - 1:
            start = reset_peak()
        before = clock()
        fn()
        after = clock()
        first = after[1] - before[1] if first is None else first
        warm = after[0] - before[0]
    memory = status_mb("VmHWM") - start if MEMORY else float("nan")
    n = 2 if warm > long_call else repeats
    wall, cpu, system = [], [], []
    while len(wall) < n or (sum(wall) < min_time and len(wall) < 5 * repeats):
        before = clock()
        fn()
        after = clock()
        wall.append(after[0] - before[0])
        cpu.append(after[1] - before[1])
        system.append(after[2] - before[2])
    return {
        "wall": 1e3 * statistics.median(wall),
        "cpu": 1e3 * statistics.median(cpu),
        "sys": 1e3 * statistics.median(system),
        "repeats": len(wall),
        "first": 1e3 * first,
        "mem": memory,
    }


def guarded(fn, repeats, budget_mb, **kwargs) -> dict:
    """``measure`` under a memory guard: ``status`` is ``measured``, or ``out of
    memory`` with a ``note``, instead of an OOM kill."""
    try:
        with memory_guard(budget_mb):
            result = measure(fn, repeats, **kwargs)
        result["status"] = "measured"
    except OutOfMemory as error:
        result = {
            "status": "out of memory",
            "note": f"> {budget_mb / 1e3:.1f} GB ({error})",
        }
    return result


def round_robin(calls: dict, results: dict, rounds: int) -> None:
    """Time the measured ``calls`` round-robin (one call of each per round, in a
    new random order every round, so that no model always follows the same one
    and a change of load on a shared machine affects all alike) and store the
    median CPU, wall and system ms and the rounds in ``results[name]``."""
    times = {name: ([], [], []) for name in calls}
    order = list(calls.items())
    shuffler = random.Random(SEED)
    for _ in range(rounds):
        shuffler.shuffle(order)
        for name, call in order:
            if results[name]["status"] != "measured":
                continue
            before = clock()
            call()
            after = clock()
            for series, index in zip(times[name], range(3), strict=True):
                series.append(after[index] - before[index])
    for name, (wall, cpu, system) in times.items():
        if wall:
            results[name].update(
                wall=1e3 * statistics.median(wall),
                cpu=1e3 * statistics.median(cpu),
                sys=1e3 * statistics.median(system),
                repeats=len(wall),
            )


def rounds_for(results: dict, repeats: int, min_seconds: float, cap: int) -> int:
    """Rounds giving at least ``repeats`` and ``min_seconds`` of calls (two for
    rounds over 15 s), at most ``cap``."""
    round_s = sum(r.get("cpu", 0.0) for r in results.values()) / 1e3
    if round_s > 15.0:
        return 2
    return min(cap, max(repeats, math.ceil(min_seconds / max(round_s, 1e-3))))


# ---------------------------------------------------------------- JSON


def write_json(path, data) -> None:
    """Write ``data`` as indented JSON (NaN as null) and log the path."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_no_nan(data), indent=1)
    Path(path).write_text(text + "\n")
    log(f"wrote {path}")


def _no_nan(value):
    """``value`` with non-finite floats as None (JSON null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _no_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_no_nan(v) for v in value]
    return value
