"""Measure one real training step's peak memory on CPU and compare it with the meta prediction.

    PYTHONPATH=. python benchmarks/training_memory.py --model resnet18 --batch 32 --optimizer adam

How it measures: the step runs in a fresh subprocess (torch cannot be unloaded, and tracemalloc
does not see torch's allocator). glibc is told to serve every allocation above 64 KiB with its own
mmap (``MALLOC_MMAP_THRESHOLD_=65536``, which also pins the threshold), so freed tensors go back to
the kernel at once and the resident set size tracks live tensors. The child builds the model on
CPU, makes the batch, runs one warm-up step (forward, ``sum().backward()``, ``optimizer.step()``:
the optimizer state now exists), calls ``zero_grad()`` (gradients set to None), reads VmRSS, resets
the high-water mark (``echo 5 > /proc/self/clear_refs``), runs a second step and reads VmHWM.
Measured: VmHWM minus the RSS just after ``import torch`` and before anything was built, i.e.
parameters + buffers + batch + optimizer state + the step's own peak. Predicted:
``TrainingMemory.peak(optimizer)`` of ``count(..., training=True)`` on meta.
Not a test (it takes seconds and a GiB); prints one line per figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_CHILD = r"""
import json, sys
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
import torch, torchvision
torch.manual_seed(0)
torch.set_num_threads(int(sys.argv[4]))
base = status("VmRSS")
model = getattr(torchvision.models, sys.argv[1])().train()
x = torch.randn(int(sys.argv[2]), 3, 224, 224)
opt = {"sgd": lambda p: torch.optim.SGD(p, lr=0.1),
       "sgd-momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
       "adam": lambda p: torch.optim.Adam(p, foreach=False),
       "adamw": lambda p: torch.optim.AdamW(p, foreach=False)}[sys.argv[3]](model.parameters())
def step():
    model(x).sum().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
step()
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
model(x).sum().backward()
after_backward = status("VmHWM")
opt.step()
peak = status("VmHWM")
print(json.dumps({"base": base, "before_step": before, "peak_backward": after_backward, "peak": peak}))
"""


def measure(model: str, batch: int, optimizer: str, threads: int) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run([sys.executable, "-c", _CHILD, model, str(batch), optimizer, str(threads)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def predict(model: str, batch: int):
    import torch
    import torchvision

    from reconcile import count

    with torch.device("meta"):
        m = getattr(torchvision.models, model)()
    return count(m, (torch.empty(batch, 3, 224, 224, device="meta"),), training=True).training.memory


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--optimizer", default="adam", choices=("sgd", "sgd-momentum", "adam", "adamw"))
    p.add_argument("--threads", type=int, default=1)
    ns = p.parse_args()
    m = measure(ns.model, ns.batch, ns.optimizer, ns.threads)
    mem = predict(ns.model, ns.batch)
    mib = 1 << 20
    measured = m["peak"] - m["base"]
    predicted = mem.peak(ns.optimizer)
    print(f"measured resident before the step (RSS - RSS after import): {(m['before_step'] - m['base']) / mib:,.1f} MiB; "
          f"predicted {mem.resident(ns.optimizer) / mib:,.1f} MiB")
    print(f"measured step peak above that: {(m['peak'] - m['before_step']) / mib:,.1f} MiB; predicted "
          f"{max(mem.forward_peak, mem.backward_peak, mem.after_backward) / mib:,.1f} MiB ({mem.peak_at})")
    print(f"measured peak (VmHWM - RSS after import): {measured / mib:,.1f} MiB; predicted {predicted / mib:,.1f} MiB; "
          f"predicted / measured = {predicted / measured:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
