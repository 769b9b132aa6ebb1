"""Small models that exercise every convention difference. Each factory returns ``(model, inputs)``
on CPU, in eval mode, with deterministic values. Used by every tool's convention tests and by
the runner (``tests.models_small:build`` builds one by name)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def _seeded() -> None:
    torch.manual_seed(0)


class Fn(nn.Module):
    """Runs ``fn(self, *x)`` as its forward, with ``children`` registered (one-off models in tests)."""

    def __init__(self, fn, **children) -> None:
        super().__init__()
        self.fn = fn
        for name, child in children.items():
            setattr(self, name, child)

    def forward(self, *x):
        return self.fn(self, *x)


class BiasedAttention(nn.Module):
    """q = k = v = x (1x2x4x8) with a relative-position-style additive mask (1x2x4x4): a learned
    table (requires grad when tools run with grad) or a constant."""

    def __init__(self, learned: bool) -> None:
        super().__init__()
        self.learned = learned
        self.table = nn.Parameter(torch.zeros(1, 2, 4, 4))

    def forward(self, x):
        mask = self.table * 1.0 if self.learned else torch.zeros(1, 2, 4, 4)
        return F.scaled_dot_product_attention(x, x, x, attn_mask=mask)


class LookupAttention(nn.Module):
    """timm's maxvit_tf attention in small: its mask made by a bmm of its own (a relative-position
    table, 2x4x4, times a 2x4x4 lookup: 2 x 4 x 4 x 4 = 128 MACs) beside the attention call on x
    (1x2x4x8, q = k = v = x: 2 x (2 x 4 x 4 x 8) = 512 MACs). ``learned``: the table is a parameter,
    so the mask requires grad when tools run with grad (CPU's math path); else a buffer (fused)."""

    def __init__(self, learned: bool) -> None:
        super().__init__()
        if learned:
            self.table = nn.Parameter(torch.ones(2, 4, 4))
        else:
            self.register_buffer("table", torch.ones(2, 4, 4))
        self.register_buffer("lookup", torch.eye(4).expand(2, 4, 4).contiguous())

    def forward(self, x):
        mask = torch.bmm(self.table, self.lookup).unsqueeze(0)
        return F.scaled_dot_product_attention(x, x, x, attn_mask=mask)


class OneKvHead(nn.Module):
    """timm's MultiQueryAttention2d in small: q = x (1x4x4x8, 4 heads), one k and v head
    (x[:, :1], 1x1x4x8) that CPU broadcasts without enable_gqa: 2 x (4 x 4 x 4 x 8) = 1,024 MACs."""

    def forward(self, x):
        kv = x[:, :1]
        return F.scaled_dot_product_attention(x, kv, kv)


class ThreeDimAttention(nn.Module):
    """timm's samvit in small: 3-D q = k = v (the 2 heads of x, 1x2x4x8, folded into the batch:
    2x4x8) with a constant 3-D mask (2x4x4), which CPU runs fused as a batch of one:
    2 x (2 x 4 x 4 x 8) = 512 MACs."""

    def forward(self, x):
        q = x.reshape(-1, 4, 8)
        return F.scaled_dot_product_attention(q, q, q, attn_mask=torch.zeros(2, 4, 4))


class Functional(nn.Module):
    """Work done in the module's own forward: functional relu, residual add, matmul, interpolate."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.proj = nn.Linear(16, 16)

    def forward(self, x):
        y = F.relu(self.conv(x))
        y = y + F.max_pool2d(y, 1)
        z = self.proj(y.flatten(2)[..., :16])
        z = torch.matmul(z, z.transpose(-1, -2))
        up = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        return z.sum() + up.mean()


class Repeated(nn.Module):
    """A Linear and a ReLU called twice each."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(32, 32)
        self.act = nn.ReLU()
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = self.act(self.fc(x))
        x = self.act(self.fc(x))
        return self.head(x)


class ConvVariety(nn.Module):
    """Grouped, depthwise, dilated and transposed convolutions, with and without bias."""

    def __init__(self):
        super().__init__()
        self.grouped = nn.Conv2d(8, 16, 3, padding=1, groups=4, bias=False)
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.dilated = nn.Conv2d(16, 8, 3, padding=2, dilation=2)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.up(self.dilated(self.depthwise(self.grouped(x))))))


class Norms(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(8)
        self.gn = nn.GroupNorm(2, 8)
        self.inorm = nn.InstanceNorm2d(8, affine=True)
        self.ln = nn.LayerNorm([8, 6, 6])
        self.conv = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        return self.conv(self.ln(self.inorm(self.gn(self.bn(x)))))


class PoolsAndFriends(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.maxpool = nn.MaxPool2d(2)
        self.avgpool = nn.AvgPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.gap = nn.AdaptiveAvgPool2d((3, 3))
        self.act = nn.GELU()
        self.hs = nn.Hardswish()
        self.fc = nn.Linear(54, 5)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x):
        x = self.maxpool(self.act(self.conv(x)))
        x = self.up(self.avgpool(x))
        x = self.hs(self.gap(x))
        return self.softmax(self.fc(x.flatten(1)))


class Attention(nn.Module):
    """nn.MultiheadAttention and nn.TransformerEncoderLayer (both have eval fast paths)."""

    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(32, 4, batch_first=True)
        self.layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, dropout=0.0)
        self.head = nn.Linear(32, 3)

    def forward(self, x):
        a, _ = self.mha(x, x, x)
        return self.head(self.layer(a))


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        self.gru = nn.GRU(16, 12, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(24, 4)

    def forward(self, x):
        y, _ = self.lstm(x)
        y, _ = self.gru(y)
        return self.fc(y[:, -1])


class Tied(nn.Module):
    """An embedding tied to the output head, a frozen layer and a free parameter."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.frozen = nn.Linear(16, 16)
        self.frozen.requires_grad_(False)
        self.scale = nn.Parameter(torch.ones(16))
        self.head = nn.Linear(16, 50, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids):
        return self.head(self.frozen(self.emb(ids)) * self.scale)


class FreeParams(nn.Module):
    """A parameter held by the root and used functionally, beside a frozen conv."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.conv.requires_grad_(False)
        self.bias = nn.Parameter(torch.zeros(4, 1, 1))
        self.fc = nn.Linear(4 * 6 * 6, 2)

    def forward(self, x):
        return self.fc((self.conv(x) + self.bias).flatten(1))


def _make(cls: type, *shape: int, dtype: torch.dtype = torch.float32, high: int = 2) -> Callable:
    def factory():
        _seeded()
        model = cls().eval()
        if dtype == torch.long:
            x = torch.randint(0, high, shape)
        else:
            x = torch.randn(*shape)
        return model, (x,)

    return factory


SMALL_MODELS: dict[str, Callable[[], tuple[nn.Module, tuple[torch.Tensor, ...]]]] = {
    "functional": _make(Functional, 1, 3, 4, 4),
    "repeated": _make(Repeated, 2, 32),
    "conv_variety": _make(ConvVariety, 1, 8, 8, 8),
    "norms": _make(Norms, 2, 8, 6, 6),
    "pools": _make(PoolsAndFriends, 1, 3, 12, 12),
    "attention": _make(Attention, 2, 10, 32),
    "recurrent": _make(Recurrent, 2, 5, 8),
    "tied": _make(Tied, 2, 7, dtype=torch.long, high=50),
    "free_params": _make(FreeParams, 1, 3, 8, 8),
}

INPUTS = {
    "functional": ((1, 3, 4, 4), "float32", None),
    "repeated": ((2, 32), "float32", None),
    "conv_variety": ((1, 8, 8, 8), "float32", None),
    "norms": ((2, 8, 6, 6), "float32", None),
    "pools": ((1, 3, 12, 12), "float32", None),
    "attention": ((2, 10, 32), "float32", None),
    "recurrent": ((2, 5, 8), "float32", None),
    "tied": ((2, 7), "long", 50),
    "free_params": ((1, 3, 8, 8), "float32", None),
}


def build(name: str, device: str = "cpu") -> nn.Module:
    """Runner-compatible builder: the small model ``name`` on ``device``, eval mode."""
    model, _ = SMALL_MODELS[name]()
    return model.to(device)
