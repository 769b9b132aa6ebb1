"""``reconcile zoo --source timm --published``: every row of timm's published table
(``reconcile.sources.timm_published``) predicted in a worker of its own and checked.

Each row is one job (``tools.PUBLISHED``) in a throwaway process, like every tool run: a model
whose build crashes, hangs or exhausts memory is that row's FAILED check, never the run's end.
This process imports no torch.
"""

from __future__ import annotations

from typing import Callable, Sequence

from reconcile.errors import ReconcileError
from reconcile.sources import timm_published as tp


def rows_for(models: Sequence[str] | None) -> list[tp.Row]:
    """The table's rows of ``models`` (``timm:NAME`` or ``NAME``), every row for None; a
    ReconcileError naming a model the table does not have."""
    table = tp.rows()
    if models is None:
        return table
    wanted = [m.partition(":")[2] if m.startswith("timm:") else m for m in models]
    known = {r.model for r in table}
    missing = [m for m in wanted if m not in known]
    if missing:
        raise ReconcileError(f"not in timm's published table: {', '.join(missing)} "
                             "(reconcile zoo --source timm --published checks only the models it lists)")
    order = {m: k for k, m in enumerate(dict.fromkeys(wanted))}
    return sorted((r for r in table if r.model in order), key=lambda r: (order[r.model], r.img_size))


def default_size(row: tp.Row) -> bool:
    from reconcile.sources.timm_table import TIMM

    shape = TIMM.get(row.model)
    return shape is not None and shape[1] == shape[2] == row.img_size


def run(rows: Sequence[tp.Row], *, timeout: float = 600.0, workers: int = 1,
        on_check: Callable[[int, tp.Check], None] | None = None) -> list[tp.Check]:
    """The check of every row, in the order given; ``on_check(position, check)`` as each settles."""
    from reconcile import tools
    from reconcile.runner import Job, run_jobs

    jobs = [Job("timm:" + r.model, tools.PUBLISHED, input_shape=(1, 3, r.img_size, r.img_size),
                options=(("size", r.img_size),), cost=float(r.gmacs or 0)) for r in rows]
    index = {id(j): k for k, j in enumerate(jobs)}
    checks: list[tp.Check | None] = [None] * len(rows)

    def done(job: Job, result) -> None:
        k = index[id(job)]
        if result.status == "ok":
            pred = result.detail
        else:
            pred = tp.Prediction(0, 0, 0, 0, error=f"{result.status}: {result.error_type}: {result.error_message}")
        checks[k] = tp.check(rows[k], pred, default_size(rows[k]))
        if on_check is not None:
            on_check(k + 1, checks[k])

    run_jobs(jobs, timeout=timeout, workers=workers, on_done=done)
    return [c for c in checks if c is not None]
