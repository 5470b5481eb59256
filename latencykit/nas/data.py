"""Training data: scikit-learn's handwritten digits (embedded, real) or an image folder.

Images are kept small in memory and resized per batch to the training resolution, which may
differ from the deployment resolution of the latency tables (blocks are resolution-agnostic).
Splits and batch order follow from the seed alone, so a resumed run sees the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from latencykit.errors import LatencykitError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


@dataclass(frozen=True)
class Dataset:
    """Images (N, C, h, w) in [0, 1] at their stored size, labels (N,), class names."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> "Dataset":
        idx = torch.as_tensor(index, dtype=torch.long)
        return Dataset(self.name, self.images[idx], self.labels[idx], self.classes)

    def split(self, val_fraction: float, seed: int) -> tuple["Dataset", "Dataset"]:
        """A seeded, stratified train/validation split."""
        rng = np.random.default_rng(seed)
        labels = self.labels.numpy()
        val: list[int] = []
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            rng.shuffle(idx)
            val.extend(idx[: max(1, int(round(len(idx) * val_fraction)))])
        mask = np.zeros(len(labels), dtype=bool)
        mask[val] = True
        return self.subset(np.flatnonzero(~mask)), self.subset(np.flatnonzero(mask))

    def batches(self, batch: int, resolution: int, seed: int | None = None, start: int = 0,
                rank: int = 0, world: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches resized to `resolution`; shuffled by `seed` (None keeps order); from batch `start`.

        With `world` > 1 every rank gets its own share of each global batch of `batch` images."""
        order = np.arange(len(self)) if seed is None else np.random.default_rng(seed).permutation(len(self))
        for b in range(start, len(order) // batch if seed is not None else -(-len(order) // batch)):
            idx = order[b * batch:(b + 1) * batch][rank::world]
            idx_t = torch.as_tensor(idx, dtype=torch.long)
            yield resize(self.images[idx_t], resolution), self.labels[idx_t]

    def steps_per_epoch(self, batch: int) -> int:
        return len(self) // batch


def resize(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """To 3 channels at `resolution`, normalised to zero mean and unit scale."""
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if images.shape[-1] != resolution or images.shape[-2] != resolution:
        images = F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return (images - 0.5) / 0.5


def digits() -> Dataset:
    """scikit-learn's 1,797 handwritten digits (8x8 grey, 10 classes), shipped with scikit-learn."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    return Dataset("digits", images, torch.tensor(d.target, dtype=torch.long), tuple(map(str, range(10))))


def image_folder(root: str | Path, size: int = 64) -> Dataset:
    """`root/<class>/<image>` files, decoded once and stored at `size` x `size`."""
    root = Path(root)
    if not root.is_dir():
        raise LatencykitError(f"dataset folder {root} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES]
    if len(classes) < 2 or not files:
        raise LatencykitError(f"dataset folder {root} needs one sub-folder of images per class (2 or more)")
    try:
        from PIL import Image
    except ImportError:
        raise LatencykitError("reading an image folder needs Pillow (pip install pillow)") from None
    images = []
    for f, _ in files:
        try:
            with Image.open(f) as im:
                arr = np.asarray(im.convert("RGB").resize((size, size)), dtype=np.float32) / 255.0
        except OSError as exc:
            raise LatencykitError(f"cannot read image {f}: {exc}") from None
        images.append(torch.from_numpy(arr).permute(2, 0, 1))
    return Dataset(root.name, torch.stack(images), torch.tensor([i for _, i in files]), tuple(classes))


def load_dataset(data: str | None) -> Dataset:
    """The embedded digits (None or "digits"), else an image folder."""
    return digits() if data in (None, "", "digits") else image_folder(data)
