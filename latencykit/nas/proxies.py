"""Accuracy signals for search: training-free proxies, or a trained supernet's accuracy.

Every signal maps an architecture to one number where higher means "expected more accurate".

Training-free proxies build the static network (`blocks.build`) with a seeded initialisation, at a
small resolution, and look at the neural tangent kernel (NTK) on a fixed minibatch of digits:

- `ntk`: mean NTK, the mean entry of Theta = J J^T, where row i of J is the gradient of the
  summed logits of image i with respect to every parameter (reported as its log);
- `ntk-cond`: the NTK's condition number lambda_max / lambda_min (lower trains faster, so the score is
  minus its log);
- `vintk`: ViNTK (Eqs. 3-4 of the ViNTK paper): the NTK multiplied elementwise with a Fourier-feature
  kernel, then averaged like the mean NTK. The Fourier kernel maps every pixel value v in [0, 1] to
  sinusoids of frequencies b_j = j with amplitudes alpha_j = 1/j^2, j = 1..n/2 (n = minibatch), so
  Theta_fourier(x, x') = mean over pixels p of sum_j alpha_j^2 cos(2 pi j (x_p - x'_p)), normalised to
  1 on the diagonal. It down-weights pairs of images that differ in high-frequency detail;
- `params`: the parameter count, the classic zero-cost baseline every proxy should beat.

`supernet` evaluates a subnet with weights inherited from a trained supernet checkpoint and batch
norm recalibrated (the supernet subsystem, latencykit.nas.supernet/evaluate), on the validation split.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol

import numpy as np
import torch

from latencykit.arch import Arch
from latencykit.blocks import build
from latencykit.errors import LatencykitError
from latencykit.nas.evaluate import recalibrate_bn
from latencykit.nas.proxy_data import proxy_batch
from latencykit.nas.supernet import smallest_resolution
from latencykit.registry import Registry
from latencykit.space import SearchSpace


class AccuracySignal(Protocol):
    name: str
    kind: str  # "proxy" (training-free, unitless) or "accuracy" (a validation accuracy in [0, 1])

    def score(self, arch: Arch) -> float: ...


PROXIES: Registry[Callable[..., AccuracySignal]] = Registry("accuracy signal", "latencykit.proxies")
"""name -> factory(space, **options) returning an AccuracySignal."""


@dataclass(frozen=True)
class NTKConfig:
    batch: int = 8
    resolution: int = 0  # 0: smallest_resolution(space)
    seed: int = 0
    threads: int = 1


def ntk_matrix(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Theta[i, k] = <d sum(f(x_i)) / d theta, d sum(f(x_k)) / d theta>, per-sample gradients via torch.func."""
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in net.named_parameters()}
    buffers = {k: v.detach() for k, v in net.named_buffers()}

    def summed(p: dict, xi: torch.Tensor) -> torch.Tensor:
        return functional_call(net, (p, buffers), (xi[None],)).sum()

    grads = vmap(grad(summed), in_dims=(None, 0))(params, x)
    theta = torch.zeros(len(x), len(x), dtype=torch.float64)
    for g in grads.values():
        g = g.reshape(len(x), -1).double()
        theta += g @ g.T
    return theta


def fourier_kernel(x: torch.Tensor, frequencies: int) -> torch.Tensor:
    """Eq. 3 with b_j = j and alpha_j = 1/j^2 over each pixel value, normalised to 1 on the diagonal."""
    flat = x.reshape(len(x), -1).double()
    diff = flat[:, None, :] - flat[None, :, :]
    j = torch.arange(1, frequencies + 1, dtype=torch.float64)
    alpha2 = j**-4
    k = sum(a * torch.cos(2 * math.pi * jj * diff).mean(-1) for jj, a in zip(j, alpha2))
    return k / alpha2.sum()


_SEEDED = threading.Lock()  # seeding torch's global RNG and drawing the weights happen as one step

PROXY_VERSION = 1  # bump when a proxy's formula or inputs change: cached scores then no longer match


class NTKProxy:
    """One of the NTK-family proxies; see the module docstring for the three formulas."""

    kind = "proxy"

    def __init__(self, space: SearchSpace, name: str, config: NTKConfig = NTKConfig()) -> None:
        self.space, self.name, self.config = space, name, config
        self.resolution = config.resolution or smallest_resolution(space)
        self.agnostic = self._runs_at(self.resolution)
        if not self.agnostic:  # e.g. relative position biases sized for the layer's own map
            self.resolution = min(space.resolution)
        self.x = proxy_batch(config.batch, self.resolution, config.seed)
        self._fourier = fourier_kernel(self.x, max(1, config.batch // 2))

    def cache_key(self) -> tuple[str, str]:
        """(settings, weights) for the score cache: what the score depends on besides the architecture."""
        settings = {"batch": self.config.batch, "resolution": self.resolution, "agnostic": self.agnostic,
                    "version": PROXY_VERSION, "torch": torch.__version__.split("+")[0]}
        return json.dumps(settings, sort_keys=True), f"init-seed-{self.config.seed}"

    def _runs_at(self, resolution: int) -> bool:
        """Whether the space's networks run at an input size other than the one they were built for."""
        arch = self.space.smallest()
        if resolution == arch.resolution:
            return True
        try:
            with torch.no_grad():
                build(self.space.layers(arch))(torch.zeros(1, 3, resolution, resolution))
            return True
        except RuntimeError:
            return False

    def kernel(self, arch: Arch) -> torch.Tensor:
        """The NTK of `arch` at the proxy resolution; spaces whose layers are tied to their map size are
        built at that resolution instead (so the resolution choice itself is not scored)."""
        self.space.validate(arch)
        if not self.agnostic:
            arch = replace(arch, resolution=self.resolution)
        threads = torch.get_num_threads()
        torch.set_num_threads(self.config.threads)
        try:
            with _SEEDED:
                torch.manual_seed(self.config.seed)
                net = build(self.space.layers(arch))
            x = (self.x - 0.5) / 0.5
            return ntk_matrix(recalibrate_bn(net, [x]), x)
        finally:
            torch.set_num_threads(threads)

    def score(self, arch: Arch) -> float:
        theta = self.kernel(arch)
        if self.name == "ntk":
            return float(torch.log(theta.mean().clamp_min(1e-30)))
        if self.name == "vintk":
            return float(torch.log((theta * self._fourier).mean().clamp_min(1e-30)))
        eig = torch.linalg.eigvalsh(theta)
        return -float(torch.log(eig[-1] / eig[0].clamp_min(eig[-1] * 1e-12)))


@dataclass
class ParamsProxy:
    space: SearchSpace
    name: str = "params"
    kind: str = "proxy"

    def score(self, arch: Arch) -> float:
        return float(self.space.params(arch))


@dataclass
class SupernetAccuracy:
    """Validation accuracy with inherited weights and recalibrated BN (needs the supernet subsystem)."""

    space: SearchSpace
    checkpoint: str
    name: str = "supernet"
    kind: str = "accuracy"
    _state: dict = field(default_factory=dict, repr=False)

    def _load(self) -> dict:
        if not self._state:
            try:
                from latencykit.nas.data import load_dataset
                from latencykit.nas.evaluate import evaluate_subnet
                from latencykit.nas.train import supernet_from_checkpoint
            except ImportError:
                raise LatencykitError("the supernet signal needs latencykit's supernet subsystem "
                                      "(latencykit.nas.train); use --proxy vintk meanwhile") from None
            net, state = supernet_from_checkpoint(self.checkpoint)
            if net.space.name != self.space.name:
                raise LatencykitError(f"checkpoint {self.checkpoint} is for space {net.space.name}, "
                                      f"not {self.space.name}")
            config = state["config"]
            train, val = load_dataset(config.get("data")).split(config.get("val_fraction", 0.2),
                                                                config.get("seed", 0))
            resolution = state.get("train_resolution") or config.get("resolution") or smallest_resolution(self.space)
            self._state = {"net": net.eval(), "train": train, "val": val, "resolution": resolution,
                           "evaluate": evaluate_subnet, "calib_batches": config.get("calib_batches", 4)}
        return self._state

    def cache_key(self) -> tuple[str, str]:
        """(settings, weights): the checkpoint's content hash names the weights."""
        digest = hashlib.sha256()
        with open(self.checkpoint, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return json.dumps({"version": PROXY_VERSION}), digest.hexdigest()[:32]

    def score(self, arch: Arch) -> float:
        s = self._load()
        side = arch.resolution if getattr(s["net"], "resolution_bound", False) else s["resolution"]
        return float(s["evaluate"](s["net"], arch, s["train"], s["val"], side, s["calib_batches"]))


for _name in ("vintk", "ntk", "ntk-cond"):
    PROXIES.add(_name, lambda space, _n=_name, **options: NTKProxy(space, _n, NTKConfig(**options)))
PROXIES.add("params", lambda space, **options: ParamsProxy(space))


def _supernet(space: SearchSpace, checkpoint: str | None = None, **options: object) -> SupernetAccuracy:
    if not checkpoint:
        raise LatencykitError("the supernet signal needs a checkpoint (--checkpoint PATH from `latencykit train`)")
    return SupernetAccuracy(space, str(checkpoint))


PROXIES.add("supernet", _supernet)


def get_signal(name: str, space: SearchSpace, **options: object) -> AccuracySignal:
    return PROXIES.get(name)(space, **options)


def score_many(signal: AccuracySignal, archs: list[Arch]) -> np.ndarray:
    return np.array([signal.score(a) for a in archs], dtype=float)
