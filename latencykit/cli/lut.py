"""`latencykit lut ...`: import published tables, compare phones."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from latencykit.cli.app import SEED_MAX, JsonOption, app, emit, non_empty_file, one_of, table

lut = typer.Typer(no_args_is_help=True, help="Lookup tables: import published ones, compare phones.")
app.add_typer(lut, name="lut")


def _importers() -> list[str]:
    from latencykit.lut.importers import IMPORTERS

    return [*IMPORTERS.names(), "measurements"]


def _fillers() -> list[str]:
    from latencykit.lut.importers import FILLERS

    return FILLERS.names()


@lut.command("import")
def import_(importer: str = typer.Argument(..., callback=one_of(_importers),
                                           help="Table format (nn-meter), or `measurements` for a CSV of "
                                           "whole-model latencies (`arch,ms` rows, or --column of a wide CSV)."),
            file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, callback=non_empty_file,
                                        help="The published table file."),
            device: str = typer.Option(..., "--device", "-d", help="Name of the phone the table was measured on."),
            space: str = typer.Option(..., "--space", "-s", help="Search space name or space file."),
            out: Optional[Path] = typer.Option(None, "--out", dir_okay=False, help="Table file (default: the device's table path)."),
            fill: Optional[str] = typer.Option(None, "--fill", callback=one_of(_fillers), help="Layer predictor that fills missing layers, e.g. `layer` "
                                               "(marked predicted); without it missing layers are refused."),
            column: Optional[str] = typer.Option(None, "--column", help="measurements: the CSV column of this "
                                                 "device's latencies (default: `ms`)."),
            as_json: bool = JsonOption) -> None:
    """Convert a published per-block latency file into the device's table for a space, or import a CSV of
    whole-model latencies as the device's measurement set."""
    from latencykit.errors import LatencykitError
    from latencykit.lut.importers import FILLERS, write_import
    from latencykit.space import load_space

    if column is not None and importer != "measurements":
        raise LatencykitError(f"--column is for `lut import measurements`, not {importer}")
    if importer == "measurements":
        from latencykit.lut.measurements import import_set

        found, path = import_set(file, device, load_space(space), column, out)
        s = {**found.summary(), "path": str(path)}
        emit(s, as_json, lambda s: (
            f"imported [bold]{s['count']}[/] whole-model latencies of {s['space']} on {s['device']} "
            f"(column {s['column']!r}, {s['min_ms']:.3g}-{s['max_ms']:.3g} ms, median {s['median_ms']:.3g})\n"
            f"file sha256 {s['sha256']}\nmeasurement set: {s['path']}\n"
            f"next: latencykit fit --predictor transfer --device {s['device']} --space {s['space']}"))
        return
    filler = FILLERS.get(fill)() if fill else None
    result = write_import(importer, file, device, load_space(space), out, filler, fill or "")
    s = result.summary()
    emit(s, as_json, lambda s: (
        f"imported [bold]{s['entries']}[/] entries for {s['space']} on {s['device']} "
        f"({s['covered']}/{s['layers']} layers in the file, {s['coverage']:.1%}; "
        f"{s['unused_entries']} of its {s['file_entries']} entries not in this space)\n"
        f"sources: {s['sources']}; measured by {s['measured_by']}, {s['runtime']}\n"
        f"file sha256 {s['sha256']}\ntable: {s['path']}"))


@lut.command()
def phones(space: str = typer.Option(..., "--space", "-s", help="Search space name or space file."),
           devices: Optional[str] = typer.Option(None, "--devices", help="Comma-separated devices "
                                                 "(default: every device with a table for the space)."),
           random: int = typer.Option(6, min=1, max=1000, help="How many random subnets (of similar FLOPs) to list."),
           band: float = typer.Option(0.1, min=0.001, max=1.0,
                                      help="Random subnets are within +-BAND of the median FLOPs."),
           sample: int = typer.Option(2000, min=2, max=1_000_000,
                                      help="Random subnets behind the rank statistics and the plot."),
           seed: int = typer.Option(0, min=0, max=SEED_MAX, help="Random seed."),
           plot: Optional[Path] = typer.Option(None, dir_okay=False, help="PNG to write (default: $LATENCYKIT_HOME/plots/SPACE-phones.png)."),
           as_json: bool = JsonOption) -> None:
    """Latency of the same subnets on every phone beside their FLOPs, and where the rankings differ."""
    from latencykit.lut.phones import default_plot_path, phone_summary
    from latencykit.space import load_space

    sp = load_space(space)
    names = [d.strip() for d in devices.split(",") if d.strip()] if devices else None
    data = phone_summary(sp, names, random, sample, seed, band, plot or default_plot_path(sp.name))

    def render(d: dict):
        devs = d["devices"]
        t = table(f"{d['space']}: predicted latency (ms; table sources {d['sources']}) by FLOPs rank",
                  ["subnet", "MFLOPs", "params M", *[f"{x} ms (rank)" for x in devs], "rank differs on"],
                  [[s["name"], f"{s['mflops']:.0f}", f"{s['params_m']:.2f}",
                    *[f"{s['latency_ms'][x]:.2f} ({s['rank'][x]})" for x in devs],
                    ", ".join(s["rank_differs"]) or "-"] for s in d["subnets"]])
        lo, hi = d["band_mflops"]
        t.caption = (f"pairs ordered differently than by FLOPs, among {d['band_subnets']} random subnets of "
                     f"{lo:.0f}-{hi:.0f} MFLOPs: "
                     + ", ".join(f"{k} {v:.0%}" for k, v in d["discordant_with_flops_in_band"].items())
                     + "; between phones: "
                     + ", ".join(f"{k} {v:.0%}" for k, v in d["discordant_between_devices_in_band"].items())
                     + f"\n(over all {d['sample']} random subnets: "
                     + ", ".join(f"{k} {v:.1%}" for k, v in d["discordant_with_flops"].items())
                     + f")\nplot: {d['plot']}")
        return t

    emit(data, as_json, render)
