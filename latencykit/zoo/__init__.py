"""A zoo of mobile vision networks written here (no torchvision / timm): held-out ground truth for
whole-model measurement and kernel-level prediction, and ready-made factories for `latencykit measure`.

`ZOO` maps a family name to a builder `f(width=1.0, num_classes=1000) -> nn.Module`; `variants()`
lists the (family, width, resolution) triples the benchmark measures. Each family is also a factory
for `latencykit measure latencykit.zoo:FAMILY --input 1x3x224x224` (see `factory`).
"""

from latencykit.zoo.nets import ZOO, Variant, build, variants

__all__ = ["ZOO", "Variant", "build", "variants"]


def __getattr__(name: str):
    """`latencykit.zoo:mobilenet_v2` (any family, `-` as `_`): the family at width 1.0."""
    family = name.replace("_", "-")
    if family in ZOO:
        return lambda: ZOO[family]()
    raise AttributeError(name)
