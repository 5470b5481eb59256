"""`latencykit train` (supernet training) and `latencykit check-supernet` (the supernet contract)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer

from latencykit.cli.app import SEED_MAX, JsonOption, app, console, emit, non_empty_file, one_of, positive, table


def _samplers() -> list[str]:
    from latencykit.nas.samplers import SAMPLERS

    return SAMPLERS.names()


@app.command()
def train(
    space: str = typer.Option("autovit-xxs", help="Search space (name or JSON file)."),
    out: Path = typer.Option(Path("runs/supernet"), file_okay=False, help="Run folder: checkpoint, metrics.csv, accuracy.png. "
                             "Running again on the same folder resumes."),
    sampler: str = typer.Option("sandwich", callback=one_of(_samplers), help="Sampling strategy: uniform, sandwich, complexity, performance."),
    data: Optional[str] = typer.Option(None, "--data", help="Image folder (one sub-folder per class); "
                                       "default: scikit-learn's digits."),
    resolution: int = typer.Option(0, min=0, max=4096, help="Training resolution; 0 = the smallest the space supports. "
                                   "The deployment resolution stays the space's."),
    epochs: int = typer.Option(3, min=1, max=100_000),
    batch: int = typer.Option(64, min=1, max=1_000_000, help="Global batch (split over torchrun processes)."),
    lr: float = typer.Option(2e-3, callback=positive),
    seed: int = typer.Option(0, min=0, max=SEED_MAX),
    grad_projection: bool = typer.Option(False, "--grad-projection", help="NASViT gradient projection (Eq. 1)."),
    scaling: bool = typer.Option(False, "--scaling", help="NASViT switchable scaling layers."),
    teacher: Optional[Path] = typer.Option(None, exists=True, dir_okay=False, readable=True, callback=non_empty_file,
                                           help="Checkpoint whose largest subnet teaches."),
    distill: Literal["soft", "hard"] = typer.Option("soft", help="Teacher distillation: soft or hard."),
    checkpoint_every: int = typer.Option(10, min=1, help="Steps between checkpoints (and at every epoch end)."),
    max_steps: int = typer.Option(0, min=0, help="Stop after this many steps in total (resume later); 0 = no limit."),
    threads: int = typer.Option(0, min=0, max=256, help="Torch threads per process; 0 = torch's default."),
    as_json: bool = JsonOption,
) -> None:
    """Train a weight-entangled supernet; resumable, and data-parallel under torchrun."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from latencykit.nas.train import TrainConfig
    from latencykit.nas.train import train_supernet

    config = TrainConfig(space=space, out=str(out), sampler=sampler, data=data, resolution=resolution,
                         epochs=epochs, batch=batch, lr=lr, seed=seed, grad_projection=grad_projection,
                         scaling=scaling, teacher=str(teacher) if teacher else None, distill=distill,
                         checkpoint_every=checkpoint_every, max_steps=max_steps, threads=threads)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("loss {task.fields[loss]:.3f}  {task.fields[ips]:.1f} img/s"),
                   TimeRemainingColumn(), console=console, transient=True, disable=as_json)
    with bar:
        task = bar.add_task("training", total=None, loss=float("nan"), ips=0.0)

        def progress(p) -> None:
            bar.update(task, completed=p.step, total=p.steps, loss=p.loss, ips=p.images_per_s,
                       description=f"epoch {p.epoch + 1}")

        summary = train_supernet(config, progress)[1]
    emit(summary, as_json, lambda s: table(
        f"{s['space']} supernet on {s['data']} ({s['sampler']}): training resolution {s['train_resolution']}, "
        f"deployment resolution {s['deploy_resolution']}",
        ["epoch", "step", "smallest subnet acc", "largest subnet acc"],
        [[h["epoch"], h["step"], f"{h['smallest_acc']:.3f}", f"{h['largest_acc']:.3f}"] for h in s["history"]]))


@app.command("check-supernet")
def check_supernet_cmd(
    space: str = typer.Option("autovit-xxs", help="Search space (name or JSON file)."),
    random: int = typer.Option(2, min=0, max=1000, help="Random architectures checked besides the smallest and largest."),
    as_json: bool = JsonOption,
) -> None:
    """Check the supernet contract: extracted == supernet output, analytic params, ONNX export."""
    from latencykit.export import default_cache
    from latencykit.nas.check import check_supernet
    from latencykit.space import load_space

    results = [r.to_dict() for r in check_supernet(load_space(space), default_cache(), random=random)]
    emit(results, as_json, lambda rs: table(f"{space}: supernet contract holds", ["arch", "max abs diff", "params"],
                                             [[i, f"{r['max_abs_diff']:.2g}", r["params"]] for i, r in enumerate(rs)]))
