"""The shared jit trace of fvcore and mmengine (``reconcile.adapters.base.one_trace``) proven over
the 51 zoo sample models (torchvision's CI subset, the timm and transformers samples): each tool
run with one trace and with two (``RECONCILE_TRACE_TWICE=1``, as the tools run themselves), each
in a process of its own, every record compared field for field (notes but the one saying so,
warnings, layers, headline) and the job-seconds of both printed. Exit status 1 if any record
differs. ``python benchmarks/one_trace.py`` (about 3 minutes here); ``tests/test_one_trace.py``
keeps three of the models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = ("fvcore", "mmengine")


def _collect(path: str) -> None:
    """Run in a child: every tool on every sample model, records and job-seconds to ``path``."""
    import time
    from dataclasses import replace

    from reconcile import models, zoo
    from reconcile.record_json import to_json
    from reconcile.runner import Job, run_jobs

    names = list(zoo.ZOO_CI) + list(zoo.TIMM_SAMPLE) + list(zoo.TRANSFORMERS_SAMPLE)
    jobs = [Job(n, t, inputs=tuple(models.default_inputs(models.resolve(n)))) for n in names for t in TOOLS]
    start = time.monotonic()
    runs = run_jobs(jobs, workers=2, timeout=600)
    wall = time.monotonic() - start
    with open(path, "w") as fh:
        json.dump({"wall": wall, "seconds": {t: sum(r.seconds for j, r in zip(jobs, runs) if j.tool == t) for t in TOOLS},
                   "records": {f"{j.model} {j.tool}": json.loads(to_json(replace(r, seconds=0.0)))["fields"]
                               for j, r in zip(jobs, runs)}}, fh)


def main() -> int:
    from reconcile.adapters.base import ONE_TRACE_NOTE, TRACE_TWICE

    got = {}
    with tempfile.TemporaryDirectory() as tmp:
        for how, twice in (("one trace", ""), ("two traces", "1")):
            path = os.path.join(tmp, f"{len(got)}.json")
            env = dict(os.environ, **{TRACE_TWICE: twice})
            subprocess.run([sys.executable, __file__, "--collect", path], cwd=ROOT, env=env, check=True)
            with open(path) as fh:
                got[how] = json.load(fh)
    once, twice = got["one trace"], got["two traces"]
    differ = []
    for key, a in once["records"].items():
        b = dict(twice["records"][key])
        a = dict(a)
        notes = [n for n in a.pop("notes")["$tuple"] if n != ONE_TRACE_NOTE]
        if (notes, a) != (b.pop("notes")["$tuple"], b):
            differ.append(key)
    for how, data in got.items():
        print(f"{how}: " + ", ".join(f"{t} {s:.1f}" for t, s in data["seconds"].items())
              + f" job-s, {data['wall']:.1f} s wall (2 workers)")
    print(f"{len(once['records']) - len(differ)} of {len(once['records'])} records equal"
          + (": differ " + ", ".join(differ) if differ else ""))
    return 1 if differ else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--collect"]:
        _collect(sys.argv[2])
    else:
        sys.exit(main())
