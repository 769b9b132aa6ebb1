"""torch's process-wide settings, saved and put back around code that runs a user's model in the
caller's own process (the Python API: ``reconcile.count``).

``kept()`` restores, after the block, every setting below that the block changed, whether it
returned or raised. Each is a (name, read, write) triple over torch's public getters and setters:
cheap to read, and written back only when it changed (``set_num_threads`` is not free).

What it cannot restore, because torch offers no way to read it or to set it twice, or because it
is not a setting: ``torch.set_num_interop_threads`` (settable once per process), ``torch.set_flush_denormal``
(no getter), the CUDA and other devices' random generators (only the CPU generator is kept, so as
not to initialise CUDA), monkey-patched functions or classes (``nn.Conv2d.forward = ...``), modules
the model imported, environment variables, the working directory, signal handlers, threads or
processes it started, and anything outside torch. The command line and ``reconcile.compare`` run
every model in a throwaway process instead, where none of this reaches the caller.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)


def _settings() -> list[tuple[str, Callable[[], Any], Callable[[Any], None]]]:
    import torch

    def attr(obj: Any, name: str) -> tuple[Callable[[], Any], Callable[[Any], None]]:
        return (lambda: getattr(obj, name)), (lambda value: setattr(obj, name, value))

    backends = torch.backends
    out: list[tuple[str, Callable[[], Any], Callable[[Any], None]]] = [
        ("default dtype", torch.get_default_dtype, torch.set_default_dtype),
        ("grad mode", torch.is_grad_enabled, torch.set_grad_enabled),
        ("deterministic algorithms",
         lambda: (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()),
         lambda v: torch.use_deterministic_algorithms(v[0], warn_only=v[1])),
        ("threads", torch.get_num_threads, torch.set_num_threads),
        ("float32 matmul precision", torch.get_float32_matmul_precision, torch.set_float32_matmul_precision),
        ("anomaly detection", lambda: (torch.is_anomaly_enabled(), torch.is_anomaly_check_nan_enabled()),
         lambda v: torch.set_anomaly_enabled(v[0], v[1])),
        ("CPU random generator", torch.get_rng_state, torch.set_rng_state),
    ]
    if hasattr(torch, "get_default_device"):  # torch >= 2.3
        out.append(("default device", torch.get_default_device, torch.set_default_device))
    import torch.utils.deterministic  # noqa: F401 - the fill flag's module

    out.append(("fill uninitialized memory", *attr(torch.utils.deterministic, "fill_uninitialized_memory")))
    for where, module, names in (("cudnn", backends.cudnn, ("enabled", "benchmark", "deterministic", "allow_tf32")),
                          ("cuda.matmul", backends.cuda.matmul, ("allow_tf32", "allow_fp16_reduced_precision_reduction",
                                                  "allow_bf16_reduced_precision_reduction")),
                          ("mkldnn", backends.mkldnn, ("enabled",)),
                          ("opt_einsum", backends.opt_einsum, ("enabled", "strategy"))):
        for name in names:
            if hasattr(module, name):
                out.append((f"torch.backends.{where}.{name}", *attr(module, name)))
    for kind in ("flash", "mem_efficient", "math", "cudnn"):  # scaled_dot_product_attention backends
        read, write = getattr(backends.cuda, f"{kind}_sdp_enabled", None), getattr(backends.cuda, f"enable_{kind}_sdp", None)
        if read is not None and write is not None:
            out.append((f"torch.backends.cuda.{kind}_sdp", read, write))
    if hasattr(backends, "mha") and hasattr(backends.mha, "get_fastpath_enabled"):
        out.append(("torch.backends.mha fast path", backends.mha.get_fastpath_enabled, backends.mha.set_fastpath_enabled))
    return out


def _same(a: Any, b: Any) -> bool:
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    return bool(a == b)


@contextlib.contextmanager
def kept() -> Iterator[None]:
    """Run the block, then put back each of torch's settings listed above that it changed."""
    settings = _settings()
    saved = [(name, read(), write) for name, read, write in settings]
    try:
        yield
    finally:
        for name, value, write in saved:
            read = next(r for n, r, _ in settings if n == name)
            try:
                if not _same(read(), value):
                    write(value)
                    log.debug("restored torch's %s", name)
            except Exception as exc:  # noqa: BLE001 - one setting that will not go back spares the rest
                log.warning("could not restore torch's %s: %s", name, exc)
