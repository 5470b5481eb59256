"""Evaluating a subnet with inherited weights: extract, recalibrate batch norm, measure accuracy.

Batch-norm running statistics in a supernet mix every subnet that passed through a layer, so they
fit none of them; they are recomputed on a few training batches before a subnet is evaluated.
"""

from __future__ import annotations

from itertools import islice
from typing import Iterable

import torch
from torch import nn

from latencykit.arch import Arch
from latencykit.nas.data import Dataset


@torch.no_grad()
def recalibrate_bn(net: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
    """Replace every batch norm's running statistics with the exact average over `batches`."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    net.train()
    for x in batches:
        net(x)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    return net.eval()


@torch.no_grad()
def accuracy(net: nn.Module, data: Dataset, resolution: int, batch: int = 128,
             device: torch.device | str = "cpu") -> float:
    net.eval()
    correct = 0
    for x, y in data.batches(batch, resolution):
        correct += int((net(x.to(device)).argmax(1).cpu() == y).sum())
    return correct / max(1, len(data))


def evaluate_subnet(supernet: nn.Module, arch: Arch, calibration: Dataset, val: Dataset, resolution: int,
                    calib_batches: int = 4, batch: int = 64, device: torch.device | str = "cpu") -> float:
    """Validation accuracy of `arch` with inherited weights, after batch-norm recalibration."""
    net = supernet.extract(arch).to(device)
    batches = (x.to(device) for x, _ in islice(calibration.batches(batch, resolution, seed=12345), calib_batches))
    recalibrate_bn(net, batches)
    return accuracy(net, val, resolution, device=device)
