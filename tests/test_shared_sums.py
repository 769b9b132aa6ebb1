"""The sums every convention asks of a native count, made once per count and shared
(``rollup.memo``): what ``module.parameters()`` holds per module (``conventions.common.registered``)
and the inclusive roll-up. Checked against torch itself, on a model with a weight tied across
modules and a module registered twice, and the public ``inclusive()`` still a copy of its own."""

from __future__ import annotations

import gc

import torch
from torch import nn

from reconcile import rollup
from reconcile.conventions.common import Tree, registered
from reconcile.counter import count


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 6, bias=False)
        self.body = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 4))
        self.head = nn.Linear(6, 4, bias=False)
        self.head.weight = self.body[2].weight  # tied: one tensor, two names
        self.again = self.body[0]  # one module, two names

    def forward(self, x):
        return self.head(self.body[1](self.again(self.embed(x)))) + self.body(self.embed(x))


def _native():
    model = Tied().eval()
    return model, count(model, (torch.randn(2, 4),), name="tied")


def test_registered_is_what_module_parameters_holds():
    model, native = _native()
    assert any(p.aliases for p in native.params)  # the tie is seen
    tree = Tree(native)
    for row in native.rows:
        module = model.get_submodule(row.name) if row.name else model
        held = list(module.parameters())  # each tensor once, whatever names it has
        assert sum(p.numel for p in registered(native, row.name)) == sum(p.numel() for p in held), row.name
        assert tree.params_with_aliases(row.name) == sum(p.numel() for p in held), row.name
        # the definition it replaced: every tensor with a name under the module's prefix
        prefix = row.name + "." if row.name else ""
        assert registered(native, row.name) == [
            p for p in native.params if any(n.startswith(prefix) for n in (p.name, *p.aliases))], row.name
    # head's weight is body.2's: registered under head though canonically named in body.2
    assert [p.name for p in registered(native, "head")] == ["body.2.weight"]
    assert registered(native, "no.such.module") == []


def test_the_sums_are_made_once_per_count_and_forgotten_with_it():
    _, native = _native()
    made = []
    first = rollup.memo(native, "test", lambda c: made.append(1) or {"x": 1})
    assert rollup.memo(native, "test", lambda c: made.append(1) or {"x": 2}) is first and made == [1]
    assert rollup.shared_inclusive(native) is rollup.shared_inclusive(native)
    key = (id(native), "test")
    del native
    gc.collect()
    assert key not in rollup._MEMO


def test_the_public_inclusive_is_a_copy_of_its_own():
    _, native = _native()
    mine = native.inclusive()
    assert mine == rollup.shared_inclusive(native) and mine is not rollup.shared_inclusive(native)
    macs = mine[""]["macs"]
    # Linear 4->6 x 2 calls (2 rows each): 2 x 2 x 24 = 96; body.0 6->6 x 2 calls: 2 x 2 x 36 = 144;
    # body.2 6->4: 2 x 24 = 48; head 6->4: 2 x 24 = 48. 96 + 144 + 48 + 48 = 336
    assert macs == 336
    mine[""]["macs"] = 0
    assert native.inclusive()[""]["macs"] == 336
