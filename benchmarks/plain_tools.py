"""Baseline for `make bench`: what a user does by hand without reconcile. One fresh Python
process runs thop, ptflops (both backends), torchstat, torchsummary, fvcore and mmengine one after another
on each model named on the command line, building the model afresh (torchvision defaults, random
init) for each tool, and printing whatever the tools print (sent to /dev/null by the benchmark).
"""

import sys

import torch
import torchvision
from fvcore.nn import FlopCountAnalysis
from mmengine.analysis import get_model_complexity_info as mmengine_complexity
from ptflops import get_model_complexity_info
from thop import profile
from torchstat import stat
from torchsummary import summary


def new(name):
    return getattr(torchvision.models, name)(weights=None).eval()


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
        summary(new(name), (3, 224, 224), device="cpu")
        FlopCountAnalysis(new(name), (x,)).total()
        mmengine_complexity(new(name), inputs=(x,))


if __name__ == "__main__":
    main(sys.argv[1].split(","))
