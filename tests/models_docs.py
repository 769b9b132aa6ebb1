"""Models as tools' own documentation builds them, so their documented figures can be reproduced
through reconcile (``reconcile tools tests.models_docs:TestNet --tools mmengine``)."""

from __future__ import annotations

from torch import nn


class InnerNet(nn.Module):
    """The inner module of mmengine's documented ``TestNet`` (below)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(10, 10)
        self.fc2 = nn.Linear(10, 10)

    def forward(self, x):
        return self.fc1(self.fc2(x))


class TestNet(nn.Module):
    """mmengine's "Model Complexity Analysis" tutorial (docs/en/advanced_tutorials/model_analysis.md,
    "Usage Example 1"): two Linear(10, 10) and an ``InnerNet`` holding two more, analysed as
    ``get_model_complexity_info(model, input_shape=(1, 10))``, which feeds ``torch.randn(1, 1, 10)``
    (it puts a batch of 1 in front). Documented ``out_arch``: "#params: 0.44K, #flops: 0.4K" for
    the model, "#params: 0.11K, #flops: 100" for each Linear."""

    __test__ = False  # not a pytest test class
    example_input_shape = (1, 1, 10)

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(10, 10)
        self.fc2 = nn.Linear(10, 10)
        self.inner = InnerNet()

    def forward(self, x):
        return self.fc1(self.fc2(self.inner(x)))
