"""Training-free proxies: the NTK against plain autograd, the Fourier kernel against Eq. 3, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from latencykit.blocks import build
from latencykit.errors import LatencykitError
from latencykit.nas.evaluate import recalibrate_bn
from latencykit.nas.proxies import (PROXIES, NTKConfig, NTKProxy, fourier_kernel, get_signal,
                                    ntk_matrix)
from latencykit.nas.proxy_data import proxy_batch
from latencykit.nas.supernet import smallest_resolution


def test_registry_and_resolution(tiny) -> None:
    assert {"vintk", "ntk", "ntk-cond", "params", "supernet"} <= set(PROXIES.names())
    assert smallest_resolution(tiny) == 32  # total stride 16, whole 2x2 patches in the last stage
    with pytest.raises(LatencykitError, match="needs a checkpoint"):
        get_signal("supernet", tiny)


def test_batch_is_seeded_digits() -> None:
    a, b, c = proxy_batch(6, 32, 0), proxy_batch(6, 32, 0), proxy_batch(6, 32, 1)
    assert a.shape == (6, 3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    assert 0 <= float(a.min()) and float(a.max()) <= 1 and float(a.std()) > 0.1


def test_ntk_equals_per_sample_autograd(tiny) -> None:
    torch.manual_seed(0)
    net = build(tiny.layers(tiny.sample(1)))
    x = (proxy_batch(4, 32) - 0.5) / 0.5
    net = recalibrate_bn(net, [x])
    theta = ntk_matrix(net, x)
    grads = []
    for xi in x:
        net.zero_grad()
        net(xi[None]).sum().backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in net.parameters()]).double())
    g = torch.stack(grads)
    torch.testing.assert_close(theta, g @ g.T, rtol=1e-4, atol=1e-6)


def test_fourier_kernel_is_eq3() -> None:
    x = torch.rand(3, 1, 2, 2)
    k = fourier_kernel(x, 4)
    a, b = x[0].reshape(-1).double(), x[2].reshape(-1).double()
    want = sum(j**-4 * torch.cos(2 * math.pi * j * (a - b)).mean() for j in range(1, 5)) / sum(j**-4 for j in range(1, 5))
    assert float(k[0, 2]) == pytest.approx(float(want))
    torch.testing.assert_close(torch.diagonal(k), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(k, k.T)
    assert float(torch.linalg.eigvalsh(k)[0]) > -1e-9  # a kernel: positive semi-definite


def test_proxies_are_deterministic_and_tell_archs_apart(tiny) -> None:
    archs = [tiny.sample(i) for i in range(3)]
    config = NTKConfig(batch=4)
    vintk = NTKProxy(tiny, "vintk", config)
    scores = [vintk.score(a) for a in archs]
    assert scores[0] == NTKProxy(tiny, "vintk", config).score(archs[0])
    assert len(set(scores)) == 3


def _ntk_by_autograd(tiny, arch, config: NTKConfig) -> np.ndarray:
    """The proxy's network and batch (seeded weights, BN recalibrated), its NTK from a backward pass per image."""
    torch.manual_seed(config.seed)
    net = build(tiny.layers(arch))
    x = (proxy_batch(config.batch, smallest_resolution(tiny), config.seed) - 0.5) / 0.5
    net = recalibrate_bn(net, [x])
    grads = []
    for xi in x:
        net.zero_grad()
        net(xi[None]).sum().backward()
        grads.append(np.concatenate([p.grad.reshape(-1).double().numpy() for p in net.parameters()]))
    g = np.stack(grads)
    return g @ g.T


def _eq3_by_loops(x: torch.Tensor, frequencies: int) -> np.ndarray:
    """Eq. 3, pair by pair: per pixel, sum_j alpha_j^2 cos(2 pi j (x_p - x'_p)) with alpha_j = 1/j^2,
    averaged over pixels, normalised by its value at x = x'."""
    flat = x.reshape(len(x), -1).double().numpy()
    weights = [1 / j**4 for j in range(1, frequencies + 1)]
    k = np.empty((len(x), len(x)))
    for a in range(len(x)):
        for b in range(len(x)):
            per_pixel = sum(w * np.cos(2 * np.pi * j * (flat[a] - flat[b])) for j, w in enumerate(weights, 1))
            k[a, b] = per_pixel.mean() / sum(weights)
    return k


def test_proxy_scores_equal_an_independent_computation(tiny) -> None:
    """ntk, vintk and ntk-cond against the NTK from plain backward passes and Eq. 3 computed pair by pair."""
    config = NTKConfig(batch=4)
    arch = tiny.sample(0)
    theta = _ntk_by_autograd(tiny, arch, config)
    fourier = _eq3_by_loops(proxy_batch(4, smallest_resolution(tiny), 0), 2)
    assert NTKProxy(tiny, "ntk", config).score(arch) == pytest.approx(math.log(theta.mean()), rel=1e-5)
    vintk = NTKProxy(tiny, "vintk", config).score(arch)
    assert vintk == pytest.approx(math.log((theta * fourier).mean()), rel=1e-5)
    assert vintk < NTKProxy(tiny, "ntk", config).score(arch)  # off-diagonal Fourier weights are below 1
    eig = np.linalg.eigvalsh(theta)
    cond = NTKProxy(tiny, "ntk-cond", config).score(arch)
    assert cond == pytest.approx(-math.log(eig[-1] / eig[0]), rel=1e-4) and cond < 0
