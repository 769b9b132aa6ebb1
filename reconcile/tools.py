"""The tool registry: one frozen ``Tool`` record per counting tool, the only list of tools.

Guarantees:
- every tool reconcile runs, predicts or explains is one ``Tool`` here (``BUILTIN``) or one line of
  ``tool_versions.toml`` (a pinned version, loaded here into the same record type, installed and
  activated by ``reconcile.versions``, taking what it does not say from the tool it extends); the runner, the pipeline, the CLI's
  choices, the zoo's versions and the conventions all read from ``all_tools()``, and nothing else
  names a tool. Adding a counter is its adapter module, its convention module and one entry here;
- what makes a tool special is data on its record (the reference every explanation needs, the run's
  ``--device``, a training adapter, a torch.jit trace to compare with), never a test of its name;
- importing this module imports neither torch nor any tool (adapters and conventions are named as
  ``"module:attribute"`` strings, imported where they are used).
"""

from __future__ import annotations

import os
import sys
import tomllib
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from reconcile.errors import ReconcileError


@dataclass(frozen=True)
class Tool:
    name: str  # what --tools takes; the ToolRun's tool
    adapter: str  # "module:Class"; the module imports its tool only inside ``run``
    convention: str = ""  # "module:attribute" of its Convention; "": numbers reported, not explained
    training_adapter: str = ""  # "module:Class" counting forward + backward (--training); "": forward only
    preload: tuple[str, ...] = ()  # modules its workers import: the fork server imports them once
    dist: str = ""  # the distribution its version is read from ("": reconcile's own)
    version: str = ""  # a pinned version (tool_versions.toml), installed in its own folder; "": the environment's
    extends: str = ""  # a pin: the tool whose adapter, convention and the rest it reuses unless it says
    module: str = ""  # a pin: the import name its folder provides (its workers drop the preloaded copy)
    traced: bool = False  # counts a torch.jit trace: the pipeline runs the trace job (``TRACE``) beside it
    default: bool = True  # in the runs with no --tools
    cost: float = 1.0  # relative run time on the same model (the costliest jobs start first)
    run_device: bool = False  # builds and counts on the run's --device; else where its adapter asks (cpu)
    reference: bool = False  # the native count every prediction and explanation starts from: always runs, first
    versioned: tuple[str, ...] = ()  # other distributions whose versions change its numbers (zoo's resume key)
    # the floating dtypes it can count a model in (the model runs in its floating inputs' dtype,
    # ``inputs.model_dtype``); (): any. A run in another is not started, recorded as not run
    float_dtypes: tuple[str, ...] = ()
    # the tool call it reads, when other tools read other views of the same call: a model's group
    # makes the call once for them (``adapters.base.keep``) and the runner never splits them apart
    shares: str = ""

    def cannot_run(self, dtype: str) -> str:
        """Why it cannot count a model run in ``dtype`` ("" when it can)."""
        if not self.float_dtypes or dtype in self.float_dtypes:
            return ""
        return (f"{self.name} counts models in {', '.join(self.float_dtypes)} only (it makes its own "
                f"float32 input), not in {dtype}; to count with it, leave out --input-dtype {dtype}")

    @property
    def tool(self) -> str:
        """The tool this is a version of (itself for a tool of the environment)."""
        return self.extends or self.name

    @property
    def pinned(self) -> bool:
        return bool(self.version)

    def job(self, training: bool = False) -> str:
        """The job name its worker runs: ``NAME-training`` for its training adapter with --training."""
        return f"{self.name}{TRAINING}" if training and self.training_adapter else self.name

    # ----- a pin's folder (reconcile.versions installs, checks and activates it) -----

    @property
    def requirement(self) -> str:
        return f"{self.dist}=={self.version}"

    def folder(self) -> Path:
        return tools_root() / self.name

    def install_command(self) -> str:
        return f"{sys.executable} -m pip install --no-deps --target {self.folder()} {self.requirement}"


_A = "reconcile.adapters."
_C = "reconcile.conventions."

# In the order the default run lists them (each pin of tool_versions.toml follows the tool it extends).
# cost: relative run time measured on resnet18/vgg16 (native runs on meta).
BUILTIN: tuple[Tool, ...] = (
    Tool("native", _A + "native:NativeAdapter", _C + "native:CONVENTION",
         training_adapter=_A + "native:NativeTrainingAdapter", preload=("reconcile.counter.core",), cost=0.1,
         run_device=True, reference=True),
    Tool("thop", _A + "thop:ThopAdapter", _C + "thop:CONVENTION", preload=("thop",), dist="thop", cost=1.0),
    Tool("ptflops", _A + "ptflops:PtflopsAdapter", _C + "ptflops:CONVENTION", preload=("ptflops",),
         dist="ptflops", cost=1.2),
    Tool("ptflops-aten", _A + "ptflops:PtflopsAtenAdapter", _C + "ptflops_aten:CONVENTION", preload=("ptflops",),
         dist="ptflops", cost=1.2),
    Tool("torchstat", _A + "torchstat:TorchstatAdapter", _C + "torchstat:CONVENTION", preload=("torchstat",),
         dist="torchstat", cost=1.5, versioned=("pandas",), float_dtypes=("float32",)),  # its tables are pandas'
    Tool("torchsummary", _A + "torchsummary:TorchsummaryAdapter", _C + "torchsummary:CONVENTION",
         preload=("torchsummary",), dist="torchsummary", cost=2.0, float_dtypes=("float32",)),
    Tool("fvcore", _A + "fvcore:FvcoreAdapter", _C + "fvcore:CONVENTION", preload=("fvcore.nn",), dist="fvcore",
         traced=True, cost=2.5),
    Tool("mmengine", _A + "mmengine:MmengineAdapter", _C + "mmengine:CONVENTION", preload=("mmengine.analysis",),
         dist="mmengine", traced=True, cost=3.0),
    Tool("torchinfo", _A + "torchinfo:TorchinfoAdapter", _C + "torchinfo:CONVENTION", preload=("torchinfo",),
         dist="torchinfo", cost=1.2),
    Tool("flopcountermode", _A + "flopcountermode:FlopCounterModeAdapter", _C + "flopcountermode:CONVENTION",
         training_adapter=_A + "flopcountermode:FlopCounterModeTrainingAdapter", dist="torch", cost=1.2),
    Tool("torchprofile", _A + "torchprofile:TorchprofileAdapter", _C + "torchprofile:CONVENTION",
         preload=("torchprofile",), dist="torchprofile", traced=True, cost=1.2),
    # one call, two views: the first of the two run on a model group makes it, the other reads it
    Tool("torchscan", _A + "torchscan:TorchscanAdapter", _C + "torchscan:CONVENTION", preload=("torchscan",),
         dist="torchscan", cost=1.5, shares="torchscan.summary"),
    Tool("torchscan-ops", _A + "torchscan:TorchscanOpsAdapter", _C + "torchscan_ops:CONVENTION",
         preload=("torchscan",), dist="torchscan", cost=1.5, shares="torchscan.summary"),
    Tool("pthflops", _A + "pthflops:PthflopsAdapter", _C + "pthflops:CONVENTION", preload=("pthflops",),
         dist="pthflops", cost=1.5),
    # opt-in (--tools): DeepSpeed imports in ~5 s and calflops imports transformers and timm (~6 s),
    # so a default run would pay both in every fork server
    Tool("deepspeed", _A + "deepspeed:DeepspeedAdapter", _C + "deepspeed:CONVENTION",
         preload=("deepspeed.profiling.flops_profiler",), dist="deepspeed", default=False, cost=2.5),
    Tool("calflops", _A + "calflops:CalflopsAdapter", _C + "calflops:CONVENTION",
         preload=("transformers", "timm", "calflops"), dist="calflops", default=False, cost=2.0),
    Tool("flops-profiler", _A + "flops_profiler:FlopsProfilerAdapter", _C + "flops_profiler:CONVENTION",
         preload=("flops_profiler",), dist="flops-profiler", default=False, cost=3.0),
)

TRAINING = "-training"  # the suffix of a training job's name (``Tool.job``)
# not tools but jobs of their own: the forward as torch.jit traces it (for the native count, compared
# with a traced tool's), and a model's default inputs when finding them runs user or library code
TRACE = "native-trace"
PROBE = "inputs"
MEASURE = "roofline-measure"  # `roofline --measure` times each layer of the model (reconcile.isolated)
LLM = "native-llm"  # `count --prefill/--decode/--generate`: a language-model phase (reconcile.llm)
PUBLISHED = "timm-published"  # `zoo --source timm --published`: a row of timm's table predicted
HELPERS: dict[str, str] = {TRACE: _A + "native:TracedAdapter", PROBE: _A + "inputs:InputsProbe",
                           MEASURE: "reconcile.isolated:MeasureLayers", LLM: "reconcile.llm.adapter:PhaseAdapter",
                           PUBLISHED: _A + "timm_published:TimmPublished"}
TRACE_COST = 1.2


def all_tools() -> dict[str, Tool]:
    """Every tool by name: the built-in ones, each followed by its pinned versions, those of the
    default run first (the order of its reports' columns and of the CLI's lists)."""
    pins = _pins({t.name: t for t in BUILTIN})
    ordered: list[Tool] = []
    for t in BUILTIN:
        ordered += [t, *(pin for pin in pins.values() if pin.extends == t.name)]
    return {t.name: t for t in sorted(ordered, key=lambda t: not t.default)}  # sorted() is stable


# ----- pinned versions: one line each in tool_versions.toml (``reconcile.versions`` installs them) -----

TABLE = Path(__file__).with_name("tool_versions.toml")
_KEYS = {"tool", "dist", "version", "module", "adapter", "convention", "default"}


def tools_root() -> Path:
    """Where pinned tools are installed: ``$RECONCILE_TOOLS_ROOT``, else ``tools/`` in the running
    environment (``.venv/tools``)."""
    return Path(os.environ.get("RECONCILE_TOOLS_ROOT") or Path(sys.prefix) / "tools")


@lru_cache(maxsize=1)
def _table_lines() -> dict[str, dict]:
    with TABLE.open("rb") as fh:
        raw = tomllib.load(fh)
    for name, entry in raw.items():
        unknown = set(entry) - _KEYS
        if unknown or not {"tool", "dist", "version"} <= set(entry):
            raise ValueError(f"{TABLE.name}: {name!r} needs tool, dist and version (unknown keys: {sorted(unknown)})")
    return raw


def _pins(tools: dict[str, Tool]) -> dict[str, Tool]:
    """Every line of the table as a ``Tool``, taking from the tool it extends (in ``tools``) what
    the line does not say: adapter, convention, training adapter, preload, cost, traced. A pin is
    not in the default run unless its line says ``default = true``."""
    out = {}
    for name, entry in _table_lines().items():
        base = tools.get(entry["tool"])
        if base is None:
            raise ValueError(f"{TABLE.name}: {name!r} extends {entry['tool']!r}, which is not a tool")
        out[name] = replace(base, name=name, adapter=entry.get("adapter") or base.adapter,
                            convention=entry.get("convention") or base.convention, dist=entry["dist"],
                            version=entry["version"], extends=base.name, module=entry.get("module", base.name),
                            default=bool(entry.get("default", False)), reference=False, versioned=())
    return out


# ----- reading the registry -------------------------------------------------------------------------


def names() -> tuple[str, ...]:
    return tuple(all_tools())


def defaults() -> tuple[str, ...]:
    """The tools of a run with no --tools."""
    return tuple(t.name for t in all_tools().values() if t.default)


def find(name: str) -> Tool | None:
    return all_tools().get(name)


def get(name: str) -> Tool:
    """The tool called ``name``; a ReconcileError naming the known ones for any other name."""
    tool = find(name)
    if tool is None:
        raise ReconcileError(f"unknown tool {name!r}: choose from {', '.join(names())}")
    return tool


def reference() -> Tool:
    """The tool every prediction starts from (native)."""
    return next(t for t in all_tools().values() if t.reference)


def adapter_of(job: str) -> str:
    """The ``"module:Class"`` a worker runs for a job name: a tool's adapter, its training adapter
    (``NAME-training``) or a helper job's; a ReconcileError for a name reconcile does not know."""
    if job in HELPERS:
        return HELPERS[job]
    tool = find(job)
    if tool is not None:
        return tool.adapter
    base = job[: -len(TRAINING)] if job.endswith(TRAINING) else ""
    tool = find(base) if base else None
    if tool is not None and tool.training_adapter:
        return tool.training_adapter
    known = sorted([*all_tools(), *HELPERS, *(t.job(True) for t in all_tools().values() if t.training_adapter)])
    raise ReconcileError(f"unknown tool {job!r}; known tools: {', '.join(known)}")


def preload(jobs: tuple[str, ...] | list[str] = (), every_default: bool = True) -> tuple[str, ...]:
    """Modules the fork server imports for its workers: those of the tools among ``jobs`` and, with
    ``every_default``, of every default tool (a run's first fork server serves later runs of the
    same process too)."""
    table = all_tools()
    asked = {j[: -len(TRAINING)] if j.endswith(TRAINING) and j not in table else j for j in jobs}
    out: list[str] = []
    for t in table.values():
        if (t.default and every_default) or t.name in asked:
            out += [m for m in t.preload if m not in out]
    return tuple(out)


def versioned() -> tuple[str, ...]:
    """Every distribution whose version can change a tool's count, in registry order."""
    out: list[str] = []
    for t in all_tools().values():
        for dist in (t.dist, *t.versioned):
            if dist and not t.pinned and dist not in out:
                out.append(dist)
    return tuple(out)
