"""Time and peak memory of a step (CPU peak through the profiler's memory events, CUDA through the allocator)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch

from nfd.report.timing import sync, time_calls


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (the profiler's C++ start/stop log lines); Python exceptions still propagate."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)


def cpu_peak_bytes(fn: Callable[[], Any]) -> int | str:
    """Peak of the tensor memory allocated by ``fn`` on the CPU, above what was allocated before it.

    The PyTorch profiler (``profile_memory=True``) records every allocation and free of the CPU allocator with its
    size; the peak is the maximum of their running sum in time order. This counts every tensor, including temporaries
    inside kernels and the graph saved for the double backward of R1, but not memory outside PyTorch's allocator.
    The profiler's allocation events are not a stable API: if they cannot be read, the result is a
    'not measured: ...' string (never a made-up number). Errors raised by ``fn`` itself propagate.
    """
    from torch.profiler import ProfilerActivity, profile

    try:
        prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        with _quiet_stderr():
            prof.start()
    except Exception as e:  # pragma: no cover - a torch without the profiler
        fn()
        return f"not measured: profiler unavailable ({type(e).__name__})"
    try:
        fn()
    finally:
        with _quiet_stderr():
            prof.stop()
    try:
        from torch._C._profiler import _EventType

        allocs = []
        stack = list(prof.profiler.kineto_results.experimental_event_tree())
        while stack:
            e = stack.pop()
            if e.typed[0] == _EventType.Allocation and e.extra_fields.device.type == "cpu":
                allocs.append((e.start_time_ns, e.extra_fields.alloc_size))
            stack.extend(e.children)
    except Exception as e:  # pragma: no cover - the private event API changed
        return f"not measured: profiler memory events unavailable ({type(e).__name__})"
    if not allocs:  # pragma: no cover
        return "not measured: the profiler recorded no allocation"
    allocs.sort(key=lambda a: a[0])
    cur = peak = 0
    for _, size in allocs:
        cur += size
        peak = max(peak, cur)
    return int(peak)


def peak_bytes(fn: Callable[[], Any], device: torch.device) -> int | str:
    """Peak tensor memory of ``fn`` above the memory allocated before it: ``torch.cuda.max_memory_allocated`` on CUDA,
    :func:`cpu_peak_bytes` on the CPU."""
    if device.type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        sync(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    return cpu_peak_bytes(fn)


OUT_OF_MEMORY = "not measured: out of memory"


def _after_oom(device: torch.device, reset: Callable[[], Any]) -> None:
    reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def time_and_memory(
    fn: Callable[[], Any], device: torch.device, repeats: int, reset: Callable[[], Any] | None = None
) -> tuple[float | str, int | str]:
    """(median wall time over ``repeats`` runs, peak memory of one run). The memory run comes first and doubles as
    the warm-up, so the timed runs do not include first-call costs. ``reset`` runs before every run, outside the
    measurement (dropping the previous run's gradients there keeps their release out of the memory accounting), which
    is why the runs are timed by :func:`nfd.report.timing.time_calls` and not by torch's Timer. A step that runs out
    of memory gives :data:`OUT_OF_MEMORY` for both."""
    reset = reset or (lambda: None)
    reset()
    try:
        mem = peak_bytes(fn, device)
    except (torch.cuda.OutOfMemoryError, MemoryError):
        _after_oom(device, reset)
        return OUT_OF_MEMORY, OUT_OF_MEMORY
    except RuntimeError as e:  # the CPU allocator reports failure as a RuntimeError
        if "can't allocate memory" not in str(e) and "out of memory" not in str(e):
            raise
        _after_oom(device, reset)
        return OUT_OF_MEMORY, OUT_OF_MEMORY
    seconds = time_calls(fn, device, repeats, before=reset).median
    reset()
    return seconds, mem
