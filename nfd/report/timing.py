"""Wall-clock timing shared by ``nfd bench``, table T2 and the building-block benchmark, so all report the same thing:
seconds per call, median over repeated calls, with the accelerator synchronised around each one.

Two helpers: :func:`time_op` for a call that can be repeated as is (fixed inputs), through
:class:`torch.utils.benchmark.Timer`; :func:`time_calls` for a call whose every run must be prepared outside the
measurement or changes state (an optimiser step, a step whose gradients are reset between runs), with an explicit loop.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.benchmark import Timer


def cpu_model() -> str:
    """The CPU model name, recorded with every timing: on these machines only numbers measured side by side, on one
    CPU, compare."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock read after it covers the work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Seconds of each timed call (wall clock and this process's CPU time), and what the last call returned."""

    times: list[float]
    cpu_times: list[float] = field(default_factory=list)
    last: Any = None

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def summary(self) -> dict[str, Any]:
        """Wall seconds as the bench record stores them: median, min, max and every call."""
        return _summary(self.times)

    def cpu_summary(self) -> dict[str, Any]:
        """CPU seconds in the same form (less sensitive than wall time to other processes on a shared machine)."""
        return _summary(self.cpu_times)


def _summary(times: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "all": times}


def time_calls(
    fn: Callable[[], Any],
    device: torch.device,
    repeats: int,
    warmup: int = 0,
    before: Callable[[], Any] | None = None,
    log: Callable[[int, float, float], None] | None = None,
) -> Timing:
    """Time ``repeats`` calls of ``fn`` after ``warmup`` untimed ones. ``before`` runs ahead of every call, outside
    the measurement; ``log(i, wall_s, cpu_s)`` hears of each timed call as it ends."""
    for _ in range(warmup):
        if before is not None:
            before()
        fn()
    timing = Timing([], [])
    for i in range(repeats):
        if before is not None:
            before()
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        timing.last = fn()
        sync(device)
        timing.times.append(time.perf_counter() - t0)
        timing.cpu_times.append(time.process_time() - c0)
        if log is not None:
            log(i, timing.times[-1], timing.cpu_times[-1])
    return timing


def time_op(fn: Callable[[], Any], repeats: int) -> Timing:
    """Time ``repeats`` single calls of ``fn`` with :class:`torch.utils.benchmark.Timer` on torch's current thread
    count. The Timer runs its own warm-up calls (two) before each measurement, so first-call costs stay out of every
    time, and synchronises the accelerator around it."""
    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return Timing([timer.timeit(number=1).raw_times[0] for _ in range(repeats)])
