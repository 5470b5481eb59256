"""Gradient conflict between subnets: cosine similarity of their gradients on shared weights.

As in ElasticViT Figure 2(b) and NASViT Table 4: two subnets of one supernet are run on the same
batch, and their gradients are compared over the weights both of them use (entries where both
gradients are non-zero; an entry one subnet does not use has a zero gradient there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latencykit.arch import Arch
from latencykit.nas.supernet import Supernet


def gradient(net: Supernet, arch: Arch, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The flat gradient of the cross-entropy loss of `arch` over all supernet parameters."""
    params = [p for p in net.parameters()]
    net.set_active(arch)
    net.zero_grad(set_to_none=True)
    F.cross_entropy(net(x), y).backward()
    g = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    net.zero_grad(set_to_none=True)
    return g


def shared_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity over the entries where both gradients are non-zero."""
    shared = (a != 0) & (b != 0)
    if not shared.any():
        return float("nan")
    return float(F.cosine_similarity(a[shared], b[shared], dim=0))


def gradient_cosine(net: Supernet, a: Arch, b: Arch, x: torch.Tensor, y: torch.Tensor) -> float:
    """Cosine similarity of the shared-weight gradients of subnets `a` and `b` on one batch."""
    training = net.training
    net.train()
    out = shared_cosine(gradient(net, a, x, y), gradient(net, b, x, y))
    net.train(training)
    return out
