"""The ``reconcile roofline --measure`` check: each layer timed on CPU with real tensors next to its
lower bound on this machine's entries; a layer measured faster than its bound is a bug to look at.

``Check`` gathers what one command measures, model by model (``Check.model``), and says at the
end which layers beat their bound (``beaten``) and which did so by less than this machine's own
peak moved between its two timings (``within``: timing noise, not a count). It prints nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reconcile.roofline import compute_dtype, platforms, split_keys
from reconcile.roofline import core as rcore


@dataclass
class Check:
    hardware: str
    peak_dtype: str | None = None
    tf32: bool = False
    repeat: int = 5
    measure: bool = True
    beaten: list[str] = field(default_factory=list)  # "model on hw: module (bound / measured)"
    within: list[str] = field(default_factory=list)  # faster than the local bound by less than its noise
    noises: list[float] = field(default_factory=list)  # per model: how far the local peak moved
    refreshed: set[str] = field(default_factory=set)  # dtypes whose local figures were measured again

    def platforms(self, native: Any) -> list:
        """The hardware entries for ``native``'s compute dtype; with ``measure``, this machine's
        ("local") measured again once per dtype per command."""
        dtype = self.peak_dtype or compute_dtype(native)
        if self.measure and dtype not in self.refreshed and "local" in split_keys(self.hardware):
            from reconcile.roofline import local

            # layers timed now are compared with this machine measured now, not with a cached
            # figure from another hour: its speed and bandwidth drift (DRAM 50.7 GB/s cached, an
            # in-place ReLU at 77.8 GB/s an hour later)
            local.platform(dtype, refresh=True)
            self.refreshed.add(dtype)
        return platforms(self.hardware, dtype, self.tf32)

    def model(self, name: str, native: Any, timings: dict, plats: list, **options: Any) -> rcore.Roofline:
        """The roofline of one model with each layer's measured time, its layers that beat their
        bound added to ``beaten`` / ``within``. ``timings`` is what ``reconcile.isolated.MeasureLayers``
        measured in a worker: ``module_s``, ``total_s`` and, when "local" is among ``plats``, the
        model's own kernels timed alone just before (``kernels``) and after (``kernels_after``) the layers."""
        from reconcile.roofline import local

        module_s, total_s = timings["module_s"], timings["total_s"]
        noise = 0.0
        if any(p.key == "local" for p in plats):  # the local peak also covers this model's own kernels
            kernels, after = timings["kernels"], timings["kernels_after"]
            noise = local.peak_noise(kernels, after)
            kernels = {k: max(v, after.get(k, 0.0)) for k, v in kernels.items()}
            plats = [local.with_model_kernels(p, kernels) if p.key == "local" else p for p in plats]
        result = rcore.roofline(native, plats, measured=rcore.Measured(module_s, total_s, self.repeat), **options)
        for i in range(len(plats)):
            for m, bound, got in rcore.faster_than_bound(result, i):
                key = result.platforms[i].platform.key
                where = f"{name} on {key}: {m or '(model)'} ({bound / got:.3f})"
                # a compute-bound layer within what the peak itself moved between its two
                # timings: timing noise, not a count (memory-bound layers get no such margin)
                compute = all(t.bound == "compute" for la, t in zip(result.layers, result.platforms[i].times)
                              if la.module == m)
                noisy = plats[i].key == "local" and compute and bound / got <= 1 + noise
                (self.within if noisy else self.beaten).append(where)
        if noise:
            self.noises.append(noise)
        return result

    def notes(self) -> tuple[str, str]:
        """(the line about layers within the noise, the line of a failed check); "" for none."""
        within = beaten = ""
        if self.within:  # listed in the table too; said with why they do not fail the check
            within = (f"{len(self.within)} layer(s) measured faster than their bound by less than the local peak "
                      f"itself moved between its timings before and after the layers (up to {max(self.noises):.1%}): "
                      "timing noise, not a wrong count: " + ", ".join(self.within[:5])
                      + (" ..." if len(self.within) > 5 else ""))
        if self.beaten:  # a bound above a measured time is a bug to look at
            beaten = (f"check failed: {len(self.beaten)} layer(s) measured faster than their lower bound (bound / "
                      "measured in brackets): " + ", ".join(self.beaten[:5]) + (" ..." if len(self.beaten) > 5 else ""))
        return within, beaten
