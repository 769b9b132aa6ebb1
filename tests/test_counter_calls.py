"""The native record of Python-level torch calls (``counter/calls.py``): which call produced the
aten work, told apart where the aten level cannot."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reconcile.counter import count
from tests.models_small import BiasedAttention


class Calls(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.act = F.gelu  # bound at build time, as transformers' GELUActivation does

    def forward(self, x):
        a = x @ x.transpose(-1, -2)
        b = torch.matmul(x, x.transpose(-1, -2))
        c = a.softmax(-1) + F.softmax(b, -1)
        return self.act(x).mul(2) + torch.einsum("bij,bjk->bik", c, x)


def _calls(row):
    return [(c.func, c.components) for c in row.torch_calls]


def test_operator_method_and_function_are_told_apart():
    native = count(Calls(), (torch.randn(2, 4, 8),))
    root = native.row("")
    # x: 2 x 4 x 8; a = x @ x^T: 2 x 4 x 4 outputs, 8 MACs each = 256; softmax 5 per element x 32 = 160
    assert _calls(root) == [
        ("Tensor.__matmul__", {"macs": 256}),
        ("torch.matmul", {"macs": 256}),
        ("Tensor.softmax", {"softmax": 160}),
        ("F.softmax", {"softmax": 160}),
        ("Tensor.__add__", {"elementwise": 32}),
        ("F.gelu", {"activation": 64}),  # 2 x 4 x 8 = 64 elements
        ("Tensor.mul", {"elementwise": 64}),
        ("torch.einsum", {"macs": 256}),  # 2 x 4 x 8 outputs x 4 = 256
        ("Tensor.__add__", {"elementwise": 64}),
    ]
    assert root.attrs["binds"] == ("F.gelu",)
    # argument shapes are kept for tools whose count depends on them
    assert root.torch_calls[0].args[0].shape == (2, 4, 8)
    assert root.torch_calls[6].args[1] == 2


def test_torch_nn_layers_are_not_recorded():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
    native = count(model, (torch.randn(2, 8),))
    assert all(not r.torch_calls for r in native.rows)


def test_counting_changes_no_result():
    model = Calls()
    x = torch.randn(2, 4, 8)
    expected = model(x)
    count(model, (x,))
    assert torch.equal(model(x), expected)



def test_attention_mask_that_would_require_grad_is_noted():
    # counting runs under no_grad; tools run with grad on, where a mask made from a parameter
    # requires grad (and CPU leaves the fused kernel)
    for learned in (True, False):
        native = count(BiasedAttention(learned), (torch.randn(1, 2, 4, 8),))
        (call,) = [c for c in native.row("").torch_calls if c.func == "F.scaled_dot_product_attention"]
        assert call.facts == {"last_dim_contiguous": True, "mask_requires_grad": learned}
        assert call.components["macs"] == 512  # 2 heads x 4 x 4 x 8 x 2 products


def test_reflected_and_augmented_operators_are_operators():
    class Buckets(nn.Module):
        def forward(self, x):
            n = 0
            n += x  # int += tensor reaches Tensor.__radd__, reported as Tensor.add
            return 2 * n + x.add(1)

    native = count(Buckets(), (torch.randn(2, 3),))
    assert [c.func for c in native.row("").torch_calls] == [
        "Tensor.__add__", "Tensor.__mul__", "Tensor.add", "Tensor.__add__"]


def test_calls_whose_result_nothing_returned_uses_are_marked():
    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.Linear(4, 4)
            self.pool = nn.Sequential(nn.Linear(4, 4), nn.Tanh())  # result dropped by the caller
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            h = self.enc(x)
            _ = self.pool(h[:, 0])
            return self.head(h)

    native = count(Wrapper(), (torch.randn(1, 3, 4),))
    unused = {r.name for r in native.rows if r.call_records and not r.call_records[0].used}
    assert unused == {"pool", "pool.0", "pool.1"}
