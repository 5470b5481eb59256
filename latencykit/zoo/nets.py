"""Small, clean builders of eleven mobile network families, each at any width multiplier.

They follow each paper's stage layout (channels, depths, strides, expansion, kernel sizes) closely
enough to have each family's kernel mix; they are latency ground truth, not accuracy replicas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

Builder = Callable[..., nn.Module]


def _ch(c: float, width: float, divisor: int = 8) -> int:
    """Channels scaled by `width`, rounded to a multiple of `divisor` (never below it)."""
    return max(divisor, int(c * width + divisor / 2) // divisor * divisor)


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1,
            act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, reduced: int, gate: type[nn.Module] = nn.Sigmoid) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Conv2d(c, reduced, 1), nn.ReLU(), nn.Conv2d(reduced, c, 1), gate())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(self.pool(x))


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 and EfficientNet's MBConv: expand 1x1, depthwise kxk, optional SE, project 1x1."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: float, act=nn.ReLU6,
                 se: float = 0.0, se_gate=nn.Sigmoid) -> None:
        super().__init__()
        mid = _ch(cin * expand, 1.0)
        layers: list[nn.Module] = []
        if mid != cin:
            layers.append(conv_bn(cin, mid, 1, act=act))
        layers.append(conv_bn(mid, mid, k, stride, groups=mid, act=act))
        if se:
            layers.append(SqueezeExcite(mid, max(8, _ch(mid * se, 1.0)), se_gate))
        layers.append(conv_bn(mid, cout, 1, act=None))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class Classifier(nn.Sequential):
    def __init__(self, c: int, num_classes: int, hidden: int = 0, act=nn.ReLU) -> None:
        head: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if hidden:
            head += [nn.Linear(c, hidden), act()]
            c = hidden
        super().__init__(*head, nn.Linear(c, num_classes))


def mobilenet_v2(width: float = 1.0, num_classes: int = 1000) -> nn.Module:
    stages = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    c = _ch(32, width)
    layers: list[nn.Module] = [conv_bn(3, c, 3, 2, act=nn.ReLU6)]
    for t, co, n, s in stages:
        for i in range(n):
            layers.append(InvertedResidual(c, _ch(co, width), 3, s if i == 0 else 1, t))
            c = _ch(co, width)
    last = _ch(1280, max(1.0, width))
    layers.append(conv_bn(c, last, 1, act=nn.ReLU6))
    return nn.Sequential(*layers, Classifier(last, num_classes))


def mobilenet_v3(width: float = 1.0, num_classes: int = 1000) -> nn.Module:
    """MobileNetV3-Large: hard-swish in the later stages, squeeze-excite with a hard-sigmoid gate."""
    R, H = nn.ReLU, nn.Hardswish
    cfg = [(3, 1, 16, False, R, 1), (3, 4, 24, False, R, 2), (3, 3, 24, False, R, 1), (5, 3, 40, True, R, 2),
           (5, 3, 40, True, R, 1), (5, 3, 40, True, R, 1), (3, 6, 80, False, H, 2), (3, 2.5, 80, False, H, 1),
           (3, 2.3, 80, False, H, 1), (3, 2.3, 80, False, H, 1), (3, 6, 112, True, H, 1), (3, 6, 112, True, H, 1),
           (5, 6, 160, True, H, 2), (5, 6, 160, True, H, 1), (5, 6, 160, True, H, 1)]
    c = _ch(16, width)
    layers: list[nn.Module] = [conv_bn(3, c, 3, 2, act=H)]
    for k, e, co, se, act, s in cfg:
        layers.append(InvertedResidual(c, _ch(co, width), k, s, e, act, 0.25 if se else 0.0, nn.Hardsigmoid))
        c = _ch(co, width)
    layers.append(conv_bn(c, _ch(960, width), 1, act=H))
    return nn.Sequential(*layers, Classifier(_ch(960, width), num_classes, hidden=1280, act=H))


def efficientnet_b0(width: float = 1.0, num_classes: int = 1000) -> nn.Module:
    cfg = [(1, 3, 16, 1, 1), (6, 3, 24, 2, 2), (6, 5, 40, 2, 2), (6, 3, 80, 3, 2), (6, 5, 112, 3, 1),
           (6, 5, 192, 4, 2), (6, 3, 320, 1, 1)]
    c = _ch(32, width)
    layers: list[nn.Module] = [conv_bn(3, c, 3, 2, act=nn.SiLU)]
    for e, k, co, n, s in cfg:
        for i in range(n):
            layers.append(InvertedResidual(c, _ch(co, width), k, s if i == 0 else 1, e, nn.SiLU, 0.25 / e))
            c = _ch(co, width)
    layers.append(conv_bn(c, _ch(1280, width), 1, act=nn.SiLU))
    return nn.Sequential(*layers, Classifier(_ch(1280, width), num_classes))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, bottleneck: bool = False, groups: int = 1,
                 expand: int = 4, se: bool = False) -> None:
        super().__init__()
        if bottleneck:
            mid = cout // expand
            body = [conv_bn(cin, mid, 1), conv_bn(mid, mid, 3, stride, groups=groups)]
            if se:
                body.append(SqueezeExcite(mid, max(8, cin // 4)))
            body.append(conv_bn(mid, cout, 1, act=None))
        else:
            body = [conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, 3, act=None)]
        self.body = nn.Sequential(*body)
        self.short = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.short(x))


def _resnet(depths: list[int], bottleneck: bool, width: float, num_classes: int) -> nn.Module:
    c = _ch(64, width)
    layers: list[nn.Module] = [conv_bn(3, c, 7, 2), nn.MaxPool2d(3, 2, 1)]
    for i, n in enumerate(depths):
        co = _ch(64 * 2**i * (4 if bottleneck else 1), width)
        for j in range(n):
            layers.append(BasicBlock(c, co, 2 if j == 0 and i > 0 else 1, bottleneck))
            c = co
    return nn.Sequential(*layers, Classifier(c, num_classes))


def resnet18(width: float = 1.0, num_classes: int = 1000) -> nn.Module:
    return _resnet([2, 2, 2, 2], False, width, num_classes)


def resnet50(width: float = 1.0, num_classes: int = 1000) -> nn.Module:
    return _resnet([3, 4, 6, 3], True, width, num_classes)


class ShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        src = cin if stride == 2 else cin // 2
        self.main = nn.Sequential(conv_bn(src, half, 1), conv_bn(half, half, 3, stride, groups=half, act=None),
                                  conv_bn(half, half, 1))
        self.side = nn.Sequential(conv_bn(cin, cin, 3, 2, groups=cin, act=None), conv_bn(cin, half, 1)) \
            if stride == 2 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.side is None:
            a, b = x.chunk(2, dim=1)
            out = torch.cat([a, self.main(b)], 1)
        else:
            out = torch.cat([self.side(x), self.main(x)], 1)
        n, c, h, w = out.shape
        return out.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)  # channel shuffle


def shufflenet_v2(width: float = 1.0, num_classes: int = 1000) -> nn.Module:
    c = 24
    layers: list[nn.Module] = [conv_bn(3, c, 3, 2), nn.MaxPool2d(3, 2, 1)]
    for co, n in ((116, 4), (232, 8), (464, 4)):
        co = _ch(co, width, 4)
        for i in range(n):
            layers.append(ShuffleUnit(c, co, 2 if i == 0 else 1))
            c = co
    last = 1024 if width <= 1.5 else 2048
    layers.append(conv_bn(c, last, 1))
    return nn.Sequential(*layers, Classifier(last, num_classes))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, dim * 3), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * self.scale).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: float = 4.0) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp)), nn.GELU(), nn.Linear(int(dim * mlp), dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """ViT/DeiT-Tiny: 16x16 patches, 12 blocks of 192 channels, 3 heads, a class token."""

    def __init__(self, width: float = 1.0, num_classes: int = 1000, depth: int = 12, patch: int = 16) -> None:
        super().__init__()
        dim = _ch(192, width, 64 if width >= 1 else 32)
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.Sequential(*[TransformerBlock(dim, dim // 64 if dim >= 128 else 2) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1)
        return self.head(self.norm(self.blocks(x))[:, 0])


def vit_tiny(width: float = 1.0, num_classes: int = 1000) -> nn.Module:
    return ViT(width, num_classes)


class MobileViTBlock(nn.Module):
    """Local 3x3 + 1x1 convs, 2x2 patches unfolded to sequences, transformers, folded back, fused."""

    def __init__(self, c: int, dim: int, depth: int, heads: int = 4) -> None:
        super().__init__()
        self.local = nn.Sequential(conv_bn(c, c, 3, act=nn.SiLU), nn.Conv2d(c, dim, 1, bias=False))
        self.transformers = nn.Sequential(*[TransformerBlock(dim, heads, 2.0) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.project = conv_bn(dim, c, 1, act=nn.SiLU)
        self.fuse = conv_bn(2 * c, c, 3, act=nn.SiLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.local(x)
        b, d, h, w = y.shape
        seq = y.reshape(b, d, h // 2, 2, w // 2, 2).permute(0, 3, 5, 2, 4, 1).reshape(b * 4, (h // 2) * (w // 2), d)
        seq = self.norm(self.transformers(seq))
        y = seq.reshape(b, 2, 2, h // 2, w // 2, d).permute(0, 5, 3, 1, 4, 2).reshape(b, d, h, w)
        return self.fuse(torch.cat([x, self.project(y)], 1))


def mobilevit(width: float = 1.0, num_classes: int = 1000) -> nn.Module:
    """MobileViT-XS-like: MV2 blocks, then MobileViT blocks at strides 8, 16 and 32."""
    ch = lambda c: _ch(c, width)  # noqa: E731
    layers: list[nn.Module] = [conv_bn(3, ch(16), 3, 2, act=nn.SiLU), InvertedResidual(ch(16), ch(32), 3, 1, 4, nn.SiLU),
                               InvertedResidual(ch(32), ch(48), 3, 2, 4, nn.SiLU),
                               InvertedResidual(ch(48), ch(48), 3, 1, 4, nn.SiLU)]
    c = ch(48)
    for co, dim, depth in ((64, 96, 2), (80, 120, 4), (96, 144, 3)):
        layers += [InvertedResidual(c, ch(co), 3, 2, 4, nn.SiLU), MobileViTBlock(ch(co), _ch(dim, width, 16), depth)]
        c = ch(co)
    layers.append(conv_bn(c, ch(384), 1, act=nn.SiLU))
    return nn.Sequential(*layers, Classifier(ch(384), num_classes))


class LayerNorm2d(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.mlp = nn.Sequential(nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm(self.dw(x).permute(0, 2, 3, 1)))
        return x + y.permute(0, 3, 1, 2)


def convnext(width: float = 1.0, num_classes: int = 1000) -> nn.Module:
    """ConvNeXt-like, at mobile size: stages of depths (2, 2, 6, 2) and widths (48, 96, 192, 384)."""
    dims = [_ch(d, width) for d in (48, 96, 192, 384)]
    layers: list[nn.Module] = [nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0])]
    for i, (d, n) in enumerate(zip(dims, (2, 2, 6, 2))):
        if i:
            layers += [LayerNorm2d(dims[i - 1]), nn.Conv2d(dims[i - 1], d, 2, 2)]
        layers += [ConvNeXtBlock(d) for _ in range(n)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(dims[-1]),
                         nn.Linear(dims[-1], num_classes))


def regnet(width: float = 1.0, num_classes: int = 1000) -> nn.Module:
    """RegNetY-400MF-like: group-width-8 bottlenecks (expansion 1) with squeeze-excite."""
    c = _ch(32, width)
    layers: list[nn.Module] = [conv_bn(3, c, 3, 2)]
    for co, n in ((48, 1), (104, 3), (208, 6), (440, 6)):
        co = _ch(co, width)
        for i in range(n):
            layers.append(BasicBlock(c, co, 2 if i == 0 else 1, bottleneck=True, groups=co // 8, expand=1, se=True))
            c = co
    return nn.Sequential(*layers, Classifier(c, num_classes))


class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU())
        self.e1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU())
        self.e3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze(x)
        return torch.cat([self.e1(s), self.e3(s)], 1)


def squeezenet(width: float = 1.0, num_classes: int = 1000) -> nn.Module:
    """SqueezeNet 1.1."""
    ch = lambda c: _ch(c, width)  # noqa: E731
    fires = [(64, 16, 64), (128, 16, 64), "pool", (128, 32, 128), (256, 32, 128), "pool",
             (256, 48, 192), (384, 48, 192), (384, 64, 256), (512, 64, 256)]
    layers: list[nn.Module] = [nn.Conv2d(3, ch(64), 3, 2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True)]
    for f in fires:
        layers.append(nn.MaxPool2d(3, 2, ceil_mode=True) if f == "pool" else Fire(ch(f[0]), ch(f[1]), ch(f[2])))
    return nn.Sequential(*layers, nn.Conv2d(ch(512), num_classes, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten())


ZOO: dict[str, Builder] = {
    "mobilenet-v2": mobilenet_v2, "mobilenet-v3": mobilenet_v3, "efficientnet-b0": efficientnet_b0,
    "resnet18": resnet18, "resnet50": resnet50, "shufflenet-v2": shufflenet_v2, "mobilevit": mobilevit,
    "vit-tiny": vit_tiny, "convnext": convnext, "regnet": regnet, "squeezenet": squeezenet,
}


@dataclass(frozen=True)
class Variant:
    family: str
    width: float
    resolution: int

    @property
    def name(self) -> str:
        return f"{self.family}-w{self.width:g}-r{self.resolution}"


def variants(resolutions: tuple[int, ...] = (128, 192), widths: tuple[float, ...] = (0.5, 1.0)) -> list[Variant]:
    """Every family at each width and resolution (multiples of 64: MobileViT unfolds 2x2 patches at stride 32)."""
    return [Variant(f, w, r) for f in ZOO for w in widths for r in resolutions]


def build(variant: Variant, seed: int = 0) -> tuple[nn.Module, tuple[torch.Tensor]]:
    """The variant's module in eval mode with seeded weights, and a seeded 1x3xRxR input."""
    torch.manual_seed(seed)
    module = ZOO[variant.family](variant.width).eval()
    return module, (torch.randn(1, 3, variant.resolution, variant.resolution),)
