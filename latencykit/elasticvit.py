"""ElasticViT's architecture tuples (its released code and published models) as latencykit Archs.

A tuple is (resolution, channels[7], depths[7], conv_expand[], conv_kernel[], mlp_ratio[], heads[],
windows[], qk_scale[], v_scale[]): three MBConv stages (the first one's width is the stem's), then
four transformer stages; the per-layer lists run over all layers of their stage kind in order.
"""

from __future__ import annotations

from typing import Sequence

from latencykit.arch import Arch, StageArch
from latencykit.errors import ArchitectureError

CONV_STAGES, HEAD_DIM = 3, 16


def arch_from_tuple(t: Sequence) -> Arch:
    """The Arch of an ElasticViT tuple; raises ArchitectureError for what the `elasticvit` space lacks
    (windowed attention, qk scale other than 1, heads other than width / 16)."""
    try:
        res, channels, depths, expand, kernel, mlp, heads, windows, qk, vs = t
        n_conv, n_vit = sum(depths[:CONV_STAGES]), sum(depths[CONV_STAGES:])
        for name, values, n in (("conv_expand", expand, n_conv), ("conv_kernel", kernel, n_conv),
                                ("mlp_ratio", mlp, n_vit), ("heads", heads, n_vit), ("windows", windows, n_vit),
                                ("qk_scale", qk, n_vit), ("v_scale", vs, n_vit)):
            if len(values) != n:
                raise ArchitectureError(f"ElasticViT tuple: {name} has {len(values)} entries for {n} layers")
    except (TypeError, ValueError) as exc:
        raise ArchitectureError(f"not an ElasticViT tuple: {exc}") from None
    if any(w != 1 for w in windows) or any(q != 1 for q in qk):
        raise ArchitectureError("ElasticViT tuple uses windowed attention or qk scale != 1; the elasticvit space has neither")
    stages, conv, vit = [], 0, 0
    for i, (c, d) in enumerate(zip(channels, depths)):
        if i < CONV_STAGES:
            stages.append(StageArch(c, d, expand=tuple(expand[conv:conv + d]), kernel=tuple(kernel[conv:conv + d])))
            conv += d
        else:
            if any(h != c // HEAD_DIM for h in heads[vit:vit + d]):
                raise ArchitectureError(f"ElasticViT tuple: stage {i} heads {heads[vit:vit + d]} are not width/16")
            stages.append(StageArch(c, d, mlp_ratio=tuple(mlp[vit:vit + d]), v_scale=tuple(vs[vit:vit + d])))
            vit += d
    return Arch(int(res), int(channels[0]), tuple(stages))


def arch_to_tuple(arch: Arch) -> tuple:
    """The inverse of `arch_from_tuple`."""
    conv, vit = arch.stages[:CONV_STAGES], arch.stages[CONV_STAGES:]
    n_vit = sum(s.depth for s in vit)
    return (arch.resolution, [s.width for s in arch.stages], [s.depth for s in arch.stages],
            [e for s in conv for e in s.expand], [k for s in conv for k in s.kernel],
            [r for s in vit for r in s.mlp_ratio], [s.width // HEAD_DIM for s in vit for _ in range(s.depth)],
            [1] * n_vit, [1] * n_vit, [v for s in vit for v in s.v_scale])
