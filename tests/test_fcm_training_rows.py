"""FlopCounterMode's per-module rows in training, predicted from the native count's record of which
modules FCM's module tracker holds open during each backward op (``counter/held_open.py``).

The tracker (torch/utils/module_tracker.py) opens a module call's backward when the gradients of
all its outputs are complete and closes it when those of all its positional inputs are; FCM
charges each backward op to every open module. The engine runs ready nodes highest sequence
number first (the node created last). Every FCM figure below is worked out by hand: a bias-free
``Linear`` on a 2D input is one ``mm`` (FCM: 2 FLOPs per MAC); its backward is ``grad @ W`` (input
gradient, when the input requires grad) and ``x^T @ grad`` (weight gradient)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reconcile.adapters.flopcountermode import FlopCounterModeTrainingAdapter
from reconcile.counter import count
from tests.harness import assert_explained, explain, residual_rows

TOOL = "flopcountermode"


def _train(model: nn.Module, *inputs: torch.Tensor):
    run = FlopCounterModeTrainingAdapter().run(model, inputs)
    assert run.status == "ok", run.error_message
    native = count(model, inputs, training=True)
    ex = explain(TOOL, run, native)
    rows = {le.module: le for le in ex.layers}
    return run, ex, rows, native


def _fb(row) -> tuple[int, int]:
    return row.raw["forward_flops"], row.raw["backward_flops"]


class Downsampled(nn.Module):
    """A stem, then a block whose main branch and "downsample" both read the stem's output h."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(4, 8, bias=False)
        self.main = nn.Linear(8, 8, bias=False)
        self.down = nn.Linear(8, 8, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        return self.main(h) + self.down(h)


def test_a_downsample_holds_its_block_main_branch_backward():
    torch.manual_seed(0)
    run, ex, rows, _ = _train(Downsampled().train(), torch.randn(1, 4))
    # forward: stem 1 x 4 x 8 = 32 MACs, main and down 1 x 8 x 8 = 64 each: 2 x 160 = 320 FLOPs
    # backward: down and main 64 (input) + 64 (weight) each; stem 32 (weight only: x needs no
    # gradient): 2 x 288 = 576 FLOPs
    assert (run.headline["forward_flops"], run.headline["backward_flops"]) == (320, 576)
    # the backward, in the tracker's terms: the root opens at the seed; down's mm (created after
    # main's) runs first, down open; then main's, main open and down still open, since down closes
    # only when h's gradient is complete, after both; then h's hooks open stem and close main and
    # down, and stem's weight gradient runs with stem open (x needs no gradient: it never closes)
    assert _fb(rows["down"]) == (128, 2 * 128 + 2 * 128)  # its own backward and main's: 512
    assert _fb(rows["main"]) == (128, 2 * 128)
    assert _fb(rows["stem"]) == (64, 2 * 32)
    assert _fb(rows[""]) == (320, 576)
    assert_explained(ex)


class TwoStems(nn.Module):
    """Two layers read the input x (no gradient); one's backward runs after the other's."""

    def __init__(self) -> None:
        super().__init__()
        self.other = nn.Linear(4, 8, bias=False)
        self.first = nn.Linear(4, 8, bias=False)
        self.head = nn.Linear(8, 8, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.other(x)
        return self.head(self.first(x)) + o


def test_a_layer_whose_input_needs_no_gradient_never_closes():
    torch.manual_seed(0)
    run, ex, rows, _ = _train(TwoStems().train(), torch.randn(1, 4))
    # forward: other and first 1 x 4 x 8 = 32 MACs each, head 1 x 8 x 8 = 64: 2 x 128 = 256 FLOPs
    # backward: head 64 + 64, first and other 32 each (weight only): 2 x 192 = 384 FLOPs
    assert (run.headline["forward_flops"], run.headline["backward_flops"]) == (256, 384)
    # head's mm (created last) runs first, head open; then first's output gradient is complete:
    # first opens (head closes: its input is that output) and its weight gradient runs; other's
    # mm (created first) runs last, with other open and first still open: first's input x needs
    # no gradient, so no hook ever closes it
    assert _fb(rows["head"]) == (128, 2 * 128)
    assert _fb(rows["first"]) == (64, 2 * 32 + 2 * 32)  # its own weight gradient and other's: 128
    assert _fb(rows["other"]) == (64, 2 * 32)
    assert_explained(ex)


class Pooled(nn.Module):
    """Returns the encoder output and a pooler's output computed from it (BertModel's shape)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(4, 4, bias=False)
        self.pool = nn.Linear(4, 4, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.enc(x)
        return h, self.pool(h)


def test_backward_before_the_root_opens_is_in_global_only():
    torch.manual_seed(0)
    run, ex, rows, _ = _train(Pooled().train(), torch.randn(1, 4))
    # forward: enc and pool 1 x 4 x 4 = 16 MACs each: 64 FLOPs; backward: pool 16 (input) + 16
    # (weight), enc 16 (weight only): 2 x 48 = 96 FLOPs
    assert (run.headline["forward_flops"], run.headline["backward_flops"]) == (64, 96)
    # the root opens when the gradients of both outputs are complete; h's completes only after
    # pool's backward (which adds pool's input gradient into it), so pool's backward runs with pool
    # open and not the root: 2 x 32 = 64 FLOPs in Global, not in the root's row
    assert _fb(rows["pool"]) == (32, 64)
    assert _fb(rows["enc"]) == (32, 32)
    assert _fb(rows[""]) == (64, 32)  # its forward and enc's weight gradient
    assert run.unattributed == {"Global outside Pooled": 64}
    causes = {c.id: c.amount for c in ex.unattributed.causes["Global outside Pooled"]}
    assert causes == {"outside_root": 64}
    assert_explained(ex)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x))) + x


class Checkpointed(nn.Module):
    """Two blocks under activation checkpointing: their forward runs again inside the backward."""

    def __init__(self, reentrant: bool) -> None:
        super().__init__()
        self.reentrant = reentrant
        self.stem = nn.Linear(4, 8)
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch.utils.checkpoint import checkpoint

        h = self.stem(x)
        for block in self.blocks:
            h = checkpoint(block, h, use_reentrant=self.reentrant)
        return self.head(h)


@pytest.mark.parametrize("reentrant", [False, True], ids=["non_reentrant", "reentrant"])
def test_activation_checkpointing(reentrant):
    # the tracker's hooks stay on through the backward, where each block's forward runs again
    torch.manual_seed(0)
    run, ex, rows, _ = _train(Checkpointed(reentrant).train(), torch.randn(2, 4))
    # blocks.0.a: forward addmm 2 x 8 x 8 = 128 MACs (256 FLOPs); in the backward its recomputed
    # addmm (256) and its mm for the input gradient (2x8 @ 8x8 = 128 MACs) and the weight gradient
    # (8x2 @ 2x8 = 128 MACs): 256 + 2 x 256 = 768
    assert _fb(rows["blocks.0.a"]) == (256, 768)
    assert_explained(ex)


@pytest.mark.parametrize("model_cls", [Downsampled, TwoStems, Pooled])
def test_the_record_leaves_the_native_count_and_the_model_as_they_were(model_cls):
    torch.manual_seed(0)
    model = model_cls().train()
    x = torch.randn(1, 4)
    native = count(model, (x,), training=True)
    for r in native.rows:
        if r.backward is None:
            continue
        # the record files each MAC-carrying backward op once, by the modules open when it ran
        held: dict[str, dict[str, int]] = {}
        for _, ops in r.backward.held:
            for op, parts in ops.items():
                for part, comps in parts.items():
                    held.setdefault(op, {}).setdefault(part, 0)
                    held[op][part] += comps["macs"]
        assert held == {op: {p: c["macs"] for p, c in parts.items() if c.get("macs")}
                        for op, parts in r.backward.op_components.items()
                        if any(c.get("macs") for c in parts.values())}
    # no hook left on any module (the tensor hooks go with the graph, removed too)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_resnet18_training_rows_fully_explained():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18().train()
    run, ex, rows, _ = _train(model, torch.randn(1, 3, 224, 224))
    # layer2.0.downsample.0 (1x1 conv, stride 2, 64 -> 128 on 56x56 -> 28x28): forward 28 x 28 x
    # 128 x 64 = 6,422,528 MACs; backward input + weight gradients 2 x 6,422,528; it also holds
    # its block's conv1 (3x3, 64 -> 128, 28x28 out: 28 x 28 x 128 x 64 x 9 = 57,802,752 MACs) and
    # conv2 (3x3, 128 -> 128: 28 x 28 x 128 x 128 x 9 = 115,605,504) backward, input and weight
    # gradients each: 2 x (173,408,256) MACs. FLOPs: 2 x (2 x 6,422,528 + 2 x 173,408,256) =
    # 25,690,112 + 693,633,024 = 719,323,136
    assert _fb(rows["layer2.0.downsample.0"]) == (12_845_056, 719_323_136)
    assert residual_rows(ex) == []
    assert_explained(ex)
