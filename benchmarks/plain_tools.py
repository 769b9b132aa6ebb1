"""Baseline for `make bench`: what a user does by hand without reconcile. One fresh Python
process runs thop, ptflops (both backends), torchstat, torchsummary, fvcore, torchinfo, mmengine,
torch's FlopCounterMode, torchprofile, torchscan and pthflops one after another (every default tool
of ``reconcile.tools``; torchscan's one ``summary`` prints both of its views, the module one and the
operator one, so a user runs it once)
on each model named on the command line, building the model afresh (torchvision defaults, random
init) for each tool, and printing whatever the tools print (sent to /dev/null by the benchmark).
Then ultralytics-thop, which installs the same `thop` module: a user needs a second environment
for it; here the first `thop` is dropped and its folder (.venv/tools/ultralytics-thop) put first
on sys.path, the cheapest way there is.
"""

import sys
from pathlib import Path

import torch
import torchvision
from fvcore.nn import FlopCountAnalysis
from mmengine.analysis import get_model_complexity_info as mmengine_complexity
from ptflops import get_model_complexity_info
from thop import profile
from torchstat import stat
from torchsummary import summary
from torchinfo import summary as torchinfo_summary
from torchprofile import profile_macs
from torchscan import summary as torchscan_summary
from pthflops import count_ops
from torch.utils.flop_counter import FlopCounterMode


def new(name):
    return getattr(torchvision.models, name)(weights=None).eval()


def unpatch_torchstat():
    """torchstat sets ``__call__`` on each leaf module class and never puts it back (its ``stat``
    fails before it could): every later tool would run through its hook, and pthflops' fx tracing
    fails in it. A user who runs more tools after it deletes the patches, as here."""
    stack = [torch.nn.Module]
    while stack:
        cls = stack.pop()
        stack += cls.__subclasses__()
        call = cls.__dict__.get("__call__")
        if call is not None and getattr(call, "__qualname__", "").endswith("wrap_call"):
            delattr(cls, "__call__")


def main(names):
    for name in names:
        x = torch.rand(1, 3, 224, 224)
        profile(new(name), inputs=(x,))
        get_model_complexity_info(new(name), (3, 224, 224), as_strings=False, backend="pytorch")
        get_model_complexity_info(new(name), (3, 224, 224), as_strings=False, backend="aten")
        try:
            stat(new(name), (3, 224, 224))
        except AttributeError:  # DataFrame.append on pandas >= 2: what a user hits today
            pass
        unpatch_torchstat()
        summary(new(name), (3, 224, 224), device="cpu")
        FlopCountAnalysis(new(name), (x,)).total()
        torchinfo_summary(new(name), input_size=(1, 3, 224, 224), device="cpu")
        mmengine_complexity(new(name), inputs=(x,))
        with FlopCounterMode(display=False) as fcm:
            new(name)(x)
        fcm.get_total_flops()
        profile_macs(new(name), x)
        torchscan_summary(new(name), (3, 224, 224))
        count_ops(new(name), x)


def ultralytics_thop(names):
    for key in [k for k in sys.modules if k == "thop" or k.startswith("thop.")]:
        del sys.modules[key]
    sys.path.insert(0, str(Path(sys.prefix) / "tools" / "ultralytics-thop"))
    from thop import profile as ultralytics_profile

    for name in names:
        ultralytics_profile(new(name), inputs=(torch.rand(1, 3, 224, 224),))


if __name__ == "__main__":
    main(sys.argv[1].split(","))
    ultralytics_thop(sys.argv[1].split(","))
