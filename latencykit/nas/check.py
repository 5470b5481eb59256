"""`check_supernet`: the contract every supernet meets, for any space (built-in or a plugin's).

For each checked architecture (smallest, largest and random ones):
1. the extracted static network's output equals the supernet's (eval mode, max abs diff < tol);
2. the extracted network's params equal the space's analytic count;
3. the extracted network exports to ONNX (through the export cache).
Batch-norm statistics are first moved off their defaults by a train-mode pass per architecture,
so that sliced running statistics are part of what is compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from latencykit.arch import Arch
from latencykit.errors import LatencykitError
from latencykit.export import ExportCache
from latencykit.nas.supernet import Supernet
from latencykit.space import SearchSpace


class SupernetCheckError(LatencykitError):
    """A supernet that breaks its contract."""


@dataclass(frozen=True)
class CheckResult:
    arch: Arch
    max_abs_diff: float
    params: int
    analytic_params: int
    onnx: str

    def to_dict(self) -> dict:
        return {"arch": self.arch.to_dict(), "max_abs_diff": self.max_abs_diff, "params": self.params,
                "analytic_params": self.analytic_params, "onnx": self.onnx}


def check_supernet(space: SearchSpace, cache: ExportCache, archs: list[Arch] | None = None, random: int = 2,
                   resolution: int | None = None, batch: int = 2, seed: int = 0, tol: float = 1e-5,
                   supernet: Supernet | None = None) -> list[CheckResult]:
    """Run the contract on `archs` (default: smallest, largest and `random` random ones); raise on failure.

    Inputs are at `resolution`, else at each architecture's own resolution (blocks with position
    biases, as ElasticViT's and NASViT's attention, only run at the resolution they were built for)."""
    net = supernet if supernet is not None else Supernet(space)
    archs = archs or [space.smallest(), space.largest(), *(space.sample(seed + i) for i in range(random))]
    g = torch.Generator().manual_seed(seed)
    results = []
    for arch in archs:
        side = resolution or arch.resolution
        x = torch.randn(batch, 3, side, side, generator=g)
        net.train().set_active(arch)
        with torch.no_grad():
            net(x * 1.5 + 0.3)  # move the active slices of the BN running statistics
        net.eval()
        static = net.extract(arch).eval()
        with torch.no_grad():
            diff = float((net(x) - static(x)).abs().max())
        if not diff < tol:
            raise SupernetCheckError(f"{space.name}: extracted subnet differs from the supernet by {diff:.3g} "
                                     f"(tolerance {tol:g}) for {arch.to_json()}")
        params = sum(p.numel() for p in static.parameters())
        analytic = space.params(arch)
        if params != analytic:
            raise SupernetCheckError(f"{space.name}: extracted subnet has {params} params, the space counts "
                                     f"{analytic}, for {arch.to_json()}")
        path = cache.export(static, (x[:1],), "onnx")
        if not Path(path).exists() or Path(path).stat().st_size == 0:
            raise SupernetCheckError(f"{space.name}: ONNX export left no file for {arch.to_json()}")
        results.append(CheckResult(arch, diff, params, analytic, str(path)))
    net.train()
    return results
