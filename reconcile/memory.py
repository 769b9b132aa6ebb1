"""How much memory a worker may take: a share of what this machine (or its cgroup) has available
when a run starts, one share per worker that runs at a time, enforced in each worker with
``RLIMIT_DATA`` (the private writable memory a process maps: torch's tensors, Python's heap).

Without it, a model too large for the machine (timm's vit_7b_patch16_dinov3: 6.7 billion
parameters, 27 GB of float32 weights, on a 24 GiB machine) is built until the kernel's
out-of-memory killer ends some process, not necessarily one of reconcile's. With it, the build or
the forward that passes the share fails at once with torch's own allocation error, and the job is
recorded as ``OutOfMemory`` with the share in its message: the model is listed with the reason,
the run goes on, and nothing else on the machine is touched. Meta runs (native) allocate nothing
and are never limited in effect: such a model is still counted.
"""

from __future__ import annotations

import os
import resource
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconcile.records import ToolRun

GIB = 1 << 30
# what an allocation that failed says: torch's CPU allocator ("DefaultCPUAllocator: can't allocate
# memory: you tried to allocate N bytes. Error code 12 (Cannot allocate memory)"); Python's own
# MemoryError says nothing (one with words is a model's or a tool's own, not an allocation)
_FAILED_ALLOCATION = ("can't allocate memory", "cannot allocate memory")

_share = 0  # bytes this worker may map beyond what it had when limited (0: not limited)


def available(meminfo: str = "/proc/meminfo", cgroup: str = "/sys/fs/cgroup") -> int:
    """Bytes this machine can give a new run now: ``MemAvailable``, or less when the cgroup this
    process runs in is limited (a container: ``memory.max`` minus ``memory.current``). 0 when
    neither can be read (then nothing is limited)."""
    found = []
    try:
        with open(meminfo) as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(os.path.join(cgroup, "memory.max")) as fh:
            limit = fh.read().strip()
        if limit != "max":
            with open(os.path.join(cgroup, "memory.current")) as fh:
                found.append(max(0, int(limit) - int(fh.read().strip())))
    except (OSError, ValueError):
        pass
    return min(found) if found else 0


# the part of the available memory the workers share. All of it was too much: two workers, each at
# its share of 11.5 GiB on this 23.5 GiB machine, held 12.4 GB of their own pages each (the share
# counts from a worker's start, and pages it shares with the fork server become its own when written)
# and the kernel's out-of-memory killer ended seven of them (timm's aimv2_3b, 2026-12-06). The rest is
# left to the fork servers, the run's own process and the kernel
USABLE = (4, 5)


def share(workers: int) -> int:
    """Bytes each of ``workers`` workers running at once may take: four fifths of what is available,
    divided among them (0: unknown, not limited)."""
    num, den = USABLE
    return available() * num // den // max(1, workers)


def _mapped() -> int:
    """Bytes of private writable memory this process maps now (``VmData``)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmData in /proc/self/status")


def limit(nbytes: int) -> None:
    """Let this process (a worker, and the children it forks) map at most ``nbytes`` more private
    writable memory than it maps now; 0 leaves it unlimited. Never raises the hard limit."""
    global _share
    if nbytes <= 0:
        return
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        wanted = _mapped() + nbytes
        if hard != resource.RLIM_INFINITY:
            wanted = min(wanted, hard)
        if soft == resource.RLIM_INFINITY or wanted < soft:
            resource.setrlimit(resource.RLIMIT_DATA, (wanted, hard))
        _share = nbytes
    except (OSError, ValueError):  # not Linux, or no /proc: the run goes on unlimited
        pass


def _says_allocation(memory_error: bool, text: str) -> bool:
    """Whether an error of this kind and these words is an allocation that failed."""
    return (memory_error and text in ("", "MemoryError()")) or any(w in text.lower() for w in _FAILED_ALLOCATION)


def failed_allocation(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation that failed (torch's allocator or Python's MemoryError)."""
    return _says_allocation(isinstance(exc, MemoryError), str(exc))


def explain(run: ToolRun) -> ToolRun:
    """``run`` as recorded, or, when it failed on an allocation in a limited worker, marked
    ``OutOfMemory`` with the worker's share in its message (the tool's own words kept after it)."""
    if not _share or run.status != "failed" or run.error_type == "OutOfMemory":
        return run
    if not _says_allocation(run.error_type == "MemoryError", run.error_message):
        return run
    said = run.error_message.split("DefaultCPUAllocator: ", 1)[-1]
    message = (f"needs more memory than a worker may take here ({_share / GIB:.1f} GiB: four fifths of the memory "
               f"available when the run started, shared by the workers running at once); {said}")
    return replace(run, error_type="OutOfMemory", error_message=message)
