"""Training-free proxies: the NTK against plain autograd, the Fourier kernel against Eq. 3, determinism."""

from __future__ import annotations

import math

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
    ntk = NTKProxy(tiny, "ntk", config)
    theta = ntk.kernel(archs[0])
    assert ntk.score(archs[0]) == pytest.approx(math.log(float(theta.mean())))
    assert vintk.score(archs[0]) == pytest.approx(math.log(float((theta * vintk._fourier).mean())))
    assert vintk.score(archs[0]) < ntk.score(archs[0])  # off-diagonal Fourier weights are below 1
    cond = NTKProxy(tiny, "ntk-cond", config).score(archs[0])
    eig = torch.linalg.eigvalsh(theta)
    assert cond == pytest.approx(-math.log(float(eig[-1] / eig[0]))) and cond < 0
