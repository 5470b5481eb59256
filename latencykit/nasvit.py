"""NASViT's own FLOPs counting, for architectures of the `nasvit` space (docs/nasvit.md compares it
with latencykit's).

NASViT's released code (facebookresearch/NASViT) counts a subnet as the sum of its convolutions' and
linear layers' multiply-accumulates, computed per layer as below, plus for every transformer layer

    hw^2 (6 C^2 + 8 C^2 + 5 hw^2 C + 36 C) + 2 (C / 8)^2 hw^4

(q, k and a 4x wide v: 6 C^2; the projection from 4C: 4 C^2; two MLPs of ratio 1: 4 C^2; attention
q k^T and attn v; the 3x3 depthwise conv on v; talking heads before and after the softmax), where
its "depth" of a transformer stage counts the downsample layer too. Here the MLP term follows the
layer's ratio r (4 r C^2) and the attention terms the tokens a window holds, so ratio 1 and global
attention give NASViT's formula exactly. Odd maps round up, as its network does; hidden widths round
to multiples of 8; an inverted residual whose width changes adds its 1x1 shortcut conv.
On the space's smallest and largest subnets (with the released code's choices) this gives 189.8 and
1881.7 MFLOPs, the paper's 190 and 1881.
"""

from __future__ import annotations

from latencykit.arch import Arch
from latencykit.space import SearchSpace


def _divisible8(v: float) -> int:
    """NASViT's make_divisible(v, 8)."""
    n = max(8, int(v + 4) // 8 * 8)
    return n + 8 if n < 0.9 * v else n


def _mbconv(cin: int, cout: int, kernel: int, expand: float, stride: int, se: bool, size: int) -> tuple[int, int]:
    """(MACs, output side) of NASViT's inverted residual with its shortcut."""
    mid = _divisible8(round(cin * expand))
    macs = size**2 * cin * mid if expand != 1 else 0
    size = -(-size // stride)
    macs += size**2 * mid * kernel**2 + size**2 * mid * cout
    if se:
        macs += 2 * mid * _divisible8(mid // 4)
    if cin != cout:
        macs += size**2 * cin * cout
    return macs, size


def _transformer(size: int, width: int, head_dim: int, mlp_ratio: float, windows: int) -> int:
    tokens, window = size**2, (size // int(max(windows, 1) ** 0.5)) ** 2
    heads = width // head_dim
    linear = tokens * (6 * width**2 + 4 * width**2 + 4 * int(round(width * mlp_ratio)) * width + 36 * width)
    return linear + 5 * tokens * window * width + 2 * heads**2 * tokens * window


def nasvit_mflops(space: SearchSpace, arch: Arch) -> float:
    """MFLOPs (multiply-accumulates / 1e6) of an architecture of a NASViT-layout space, counted as NASViT counts."""
    space.validate(arch)
    size = -(-arch.resolution // space.stem.stride)
    macs, cin = size**2 * 3 * arch.stem * space.stem.kernel**2, arch.stem
    for st, sa in zip(space.stages, arch.stages):
        if st.kind == "nasvit":
            m, size = _mbconv(cin, sa.width, 3, st.downsample_expand, st.stride, st.se, size)
            macs += m + sum(_transformer(size, sa.width, st.head_dim, sa.mlp_ratio[j],
                                         sa.windows[j] if sa.windows else 1) for j in range(sa.depth))
        else:
            for j in range(sa.depth):
                m, size = _mbconv(cin if j == 0 else sa.width, sa.width, sa.kernel[j], sa.expand[j],
                                  st.stride if j == 0 else 1, st.se, size)
                macs += m
        cin = sa.width
    hidden = arch.head or space.head.hidden[0]
    wide = int(round(cin * space.head.expand))
    macs += size**2 * cin * wide + wide * hidden + hidden * space.head.classes
    return macs / 1e6
