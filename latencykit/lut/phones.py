"""Per-phone summary: the same subnets on every phone's table, beside their FLOPs.

FLOPs rank subnets the same way on every device; phones do not. This puts the smallest, the largest
and a few random subnets side by side, counts how often a phone orders two subnets differently from
their FLOPs (and from another phone), and plots latency against FLOPs per phone.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Sequence

import numpy as np

from latencykit.files import atomic_write
from latencykit.errors import TableError
from latencykit.paths import home
from latencykit.lut.predictors import get_predictor, table_predictor_name
from latencykit.lut.table import LatencyTable, default_path
from latencykit.space import SearchSpace


def tables_for(space: SearchSpace) -> list[str]:
    """Devices that have a table for `space` at their default path."""
    root = default_path("x", space.name).parent.parent
    return sorted(p.parent.name for p in root.glob(f"*/{space.name}.parquet"))


def discordant_share(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pairs that `a` and `b` order differently (ties in either count as agreeing)."""
    da, db = np.sign(a[:, None] - a[None, :]), np.sign(b[:, None] - b[None, :])
    upper = np.triu_indices(len(a), 1)
    return float(np.mean((da * db)[upper] < 0)) if len(a) > 1 else 0.0


def phone_summary(space: SearchSpace, devices: Sequence[str] | None = None, random: int = 6, sample: int = 2000,
                  seed: int = 0, band: float = 0.1, plot: str | Path | None = None) -> dict:
    """Latency of the smallest, the largest and `random` random subnets on each device's table beside
    their FLOPs, where the orders differ, and (if `plot`) a PNG of latency against FLOPs per device.

    The random subnets are drawn from `sample` random subnets whose FLOPs lie within +-`band` of the
    sample's median: a FLOPs budget is where a search has to choose, and where phones disagree.
    """
    devices = list(devices or tables_for(space))
    if not devices:
        raise TableError(f"no device has a table for space {space.name!r}; import one with "
                         "`latencykit lut import nn-meter FILE --device NAME --space SPACE`")
    tables = {d: LatencyTable.read(default_path(d, space.name)) for d in devices}
    predictors = {d: get_predictor(table_predictor_name(t)).fit(space, t) for d, t in tables.items()}
    sources = {d: sorted(p.table.rows["source"].unique()) for d, p in predictors.items()}
    rng = np.random.default_rng(seed)
    many = space.sample_genes(sample, rng)
    many_flops = space.evaluate(space.flops_values, many)
    many_lat = {d: p.predict_genes(many) for d, p in predictors.items()}
    target = float(np.median(many_flops))
    near = np.flatnonzero(np.abs(many_flops - target) <= band * target)
    chosen = rng.choice(near, size=min(random, len(near)), replace=False)
    random = len(chosen)
    picked = np.vstack([space.encode(space.smallest()), space.encode(space.largest()), many[chosen]])
    names = ["smallest", "largest"] + [f"random{i + 1}" for i in range(random)]  # random: within the band
    flops = space.evaluate(space.flops_values, picked)
    params = space.evaluate(space.params_values, picked)
    lat = {d: p.predict_genes(picked) for d, p in predictors.items()}
    order = np.argsort(flops, kind="stable")
    flops_rank = np.empty(len(flops), dtype=int)
    flops_rank[order] = np.arange(1, len(flops) + 1)
    ranks = {d: np.argsort(np.argsort(v, kind="stable"), kind="stable") + 1 for d, v in lat.items()}
    subnets = [{"name": names[i], "mflops": flops[i] / 1e6, "params_m": params[i] / 1e6,
                "latency_ms": {d: float(lat[d][i]) for d in devices}, "flops_rank": int(flops_rank[i]),
                "rank": {d: int(ranks[d][i]) for d in devices},
                "rank_differs": [d for d in devices if ranks[d][i] != flops_rank[i]],
                "arch": space.decode(picked[i]).to_dict()} for i in order]

    result = {
        "space": space.name, "devices": devices, "sources": sources, "subnets": subnets,
        "sample": sample, "seed": seed, "band_mflops": [(1 - band) * target / 1e6, (1 + band) * target / 1e6],
        "band_subnets": len(near),
        "discordant_with_flops": {d: discordant_share(many_flops, v) for d, v in many_lat.items()},
        "discordant_with_flops_in_band": {d: discordant_share(many_flops[near], v[near]) for d, v in many_lat.items()},
        "discordant_between_devices": {f"{a}/{b}": discordant_share(many_lat[a], many_lat[b])
                                       for a, b in itertools.combinations(devices, 2)},
        "discordant_between_devices_in_band": {f"{a}/{b}": discordant_share(many_lat[a][near], many_lat[b][near])
                                               for a, b in itertools.combinations(devices, 2)},
        "ms_per_mflop": {d: float(np.median(v / (many_flops / 1e6))) for d, v in many_lat.items()},
        "plot": None,
    }
    if plot is not None:
        result["plot"] = str(_plot(space.name, many_flops, many_lat, flops, lat, Path(plot)))
    return result


def default_plot_path(space: str) -> Path:
    return home() / "plots" / f"{space}-phones.png"


def _plot(space: str, flops: np.ndarray, lat: dict, picked_flops: np.ndarray, picked_lat: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    for i, (device, values) in enumerate(lat.items()):
        color = f"C{i}"
        ax.scatter(flops / 1e6, values, s=4, alpha=0.35, color=color, label=device)
        ax.scatter(picked_flops / 1e6, picked_lat[device], s=30, marker="x", color=color)
    ax.set_xlabel("MFLOPs (multiply-accumulates)")
    ax.set_ylabel("latency (ms, sum of table entries)")
    ax.set_title(f"{space}: {len(flops)} random subnets per phone (x: listed subnets)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.legend(markerscale=4)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
