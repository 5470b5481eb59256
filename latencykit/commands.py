"""Core commands: devices, spaces, profile, predict, validate."""

from __future__ import annotations

from latencykit.cli import JsonOption, app, emit, table


@app.command()
def spaces(as_json: bool = JsonOption) -> None:
    """Each search space's size and its params and FLOPs range."""
    from latencykit.space import SPACES, load_space

    rows = [load_space(n).summary() for n in SPACES.names()]
    emit(rows, as_json, lambda rs: table("search spaces", ["space", "architectures", "layers", "params (M)", "MFLOPs"], [
        [r["space"], f"{r['architectures']:.3g}", r["distinct_layers"],
         f"{r['params_min'] / 1e6:.2f}-{r['params_max'] / 1e6:.2f}",
         f"{r['flops_min'] / 1e6:.0f}-{r['flops_max'] / 1e6:.0f}"] for r in rs]))
