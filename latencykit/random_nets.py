"""Random networks of the kernel vocabulary, measured whole to calibrate how kernels compose.

A kernel measured alone and the same kernel inside a network differ on a CPU: inside, its weights come
from farther away (the other layers' weights and activations went through the caches since its last
run) while its input is near (the previous kernel just wrote it), and each intermediate tensor is one
more dispatch and allocation. `latencykit.lut.kernels` fits that difference on these networks: random
chains of cells (plain, depthwise, grouped and pointwise convolutions, inverted-residual and gated cells,
pooling, channel split and concat, channel shuffle, attention and MLP on tokens), random widths (some not
whole blocks of 4 or 8) and resolutions, ending in a classifier. They are drawn from a seed, never from
the model zoo the predictor is scored on.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

_ACTS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.GELU, nn.Identity)


def _width(rng: np.random.Generator, c: float) -> int:
    """About `c` channels, a multiple of 8 three times in four, else of 2."""
    step = 8 if rng.random() < 0.75 else 2
    return int(max(step, round(c / step) * step))


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: type[nn.Module] = nn.ReLU) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         act())


class _Residual(nn.Module):
    def __init__(self, body: nn.Module, keep: bool) -> None:
        super().__init__()
        self.body, self.keep = body, keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.keep else self.body(x)


class _Gate(nn.Module):
    """Squeeze-and-excite: global pool, two 1x1 convolutions, a sigmoid gate on the input."""

    def __init__(self, c: int, reduced: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, reduced, 1), nn.ReLU(), nn.Conv2d(reduced, c, 1),
                                nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x)


class _SplitConcat(nn.Module):
    """Half the channels through a cell, the other half passed on, concatenated and shuffled."""

    def __init__(self, c: int, body: nn.Module, shuffle: bool) -> None:
        super().__init__()
        self.half, self.body, self.shuffle = c // 2, body, shuffle

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x[:, :self.half], x[:, self.half:]
        y = torch.cat([a, self.body(b)], 1)
        if self.shuffle:
            n, c, h, w = y.shape
            y = y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return y


class _Tokens(nn.Module):
    """A transformer block on the feature map's pixels as tokens: attention and an MLP, pre-norm."""

    def __init__(self, c: int, heads: int, mlp: int, act: type[nn.Module]) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.qkv, self.proj = nn.LayerNorm(c), nn.Linear(c, 3 * c), nn.Linear(c, c)
        self.norm2 = nn.LayerNorm(c)
        self.mlp = nn.Sequential(nn.Linear(c, mlp), act(), nn.Linear(mlp, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        q, k, v = self.qkv(self.norm1(t)).reshape(n, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = ((q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5).softmax(-1)
        t = t + self.proj((a @ v).transpose(1, 2).reshape(n, h * w, c))
        t = t + self.mlp(self.norm2(t))
        return t.transpose(1, 2).reshape(n, c, h, w)


def random_network(seed: int) -> tuple[nn.Module, tuple[torch.Tensor]]:
    """A random network and its seeded 1x3xHxW input (H from 64 to 224): 4 to 20 cells after a stem, stride 2
    about one cell in four while the map is larger than 7x7, widths growing as it shrinks."""
    rng = np.random.default_rng(seed)
    size = int(rng.choice([64, 96, 128, 160, 192, 224]))
    hw = size
    c = _width(rng, 32 * np.exp(rng.uniform(np.log(0.25), np.log(2))))
    layers: list[nn.Module] = [_conv(3, c, 3, 2, act=_ACTS[rng.integers(5)])]
    hw = (hw + 1) // 2
    for _ in range(int(rng.integers(4, 21))):
        stride = 2 if hw > 7 and rng.random() < 0.25 else 1
        cout = _width(rng, c * (rng.uniform(1.3, 2.2) if stride == 2 else rng.choice([1, 1, 1, 0.75, 1.5])))
        act = _ACTS[rng.integers(len(_ACTS))]
        cell = rng.choice(["conv", "dw", "inverted", "grouped", "pool", "split", "tokens"],
                          p=[0.2, 0.1, 0.3, 0.1, 0.05, 0.1, 0.15])
        if cell == "tokens" and (hw > 16 or stride == 2 or c % 4):
            cell = "inverted"
        if cell == "pool" and stride == 2:
            layers.append(nn.MaxPool2d(3, 2, 1) if rng.random() < 0.5 else nn.AvgPool2d(2, 2))
            cout = c
        elif cell in ("conv", "pool"):
            layers.append(_Residual(_conv(c, cout, int(rng.choice([1, 3, 3, 5])), stride, act=act),
                                    stride == 1 and cout == c and rng.random() < 0.5))
        elif cell == "dw":
            layers.append(_conv(c, c, int(rng.choice([3, 5, 7])), stride, groups=c, act=act))
            cout = c
        elif cell == "grouped":
            width = int(rng.choice([8, 16, 32]))
            g = max(1, min(c, cout) // width)
            cin_g, cout = g * width, g * width
            layers += [_conv(c, cin_g, 1, act=act), _conv(cin_g, cout, 3, stride, groups=g, act=act)]
        elif cell == "split" and c % 4 == 0 and stride == 1:
            half = c // 2
            body = nn.Sequential(_conv(half, half, 1, act=act), _conv(half, half, 3, groups=half, act=nn.Identity),
                                 _conv(half, half, 1, act=act))
            layers.append(_SplitConcat(c, body, shuffle=rng.random() < 0.7))
            cout = c
        elif cell == "tokens":
            heads = int(rng.choice([h for h in (1, 2, 4) if c % h == 0]))
            layers.append(_Tokens(c, heads, _width(rng, c * rng.choice([2, 3, 4])), act))
            cout = c
        else:  # inverted residual, sometimes gated
            mid = _width(rng, c * rng.choice([2, 3, 4, 6]))
            k = int(rng.choice([3, 3, 5, 7]))
            body = [_conv(c, mid, 1, act=act), _conv(mid, mid, k, stride, groups=mid, act=act)]
            if rng.random() < 0.4:
                body.append(_Gate(mid, max(8, mid // 4)))
            body.append(_conv(mid, cout, 1, act=nn.Identity))
            layers.append(_Residual(nn.Sequential(*body), stride == 1 and cout == c))
        c, hw = cout, (hw + 1) // 2 if stride == 2 else hw
    classes = int(rng.choice([10, 100, 1000]))
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes)).eval()
    torch.manual_seed(seed)
    return net, (torch.randn(1, 3, size, size),)
