"""A fixed minibatch for training-free proxies: scikit-learn's digits, upsampled, seeded.

Proxies score an untrained network on a handful of real images; the same seed always gives the
same images, so a proxy's score is a pure function of the architecture.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def proxy_batch(n: int, resolution: int, seed: int = 0) -> torch.Tensor:
    """`n` digit images (one class after another, seeded picks) as (n, 3, r, r) in [0, 1]."""
    images, labels = _digits()
    rng = np.random.default_rng(seed)
    picks = [int(rng.choice(np.flatnonzero(labels == i % 10))) for i in range(n)]
    x = torch.from_numpy(images[picks])[:, None]
    x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return x.clamp(0, 1).expand(-1, 3, -1, -1).contiguous()
