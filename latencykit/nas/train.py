"""Supernet training: sampling strategies as plug-ins, resumable, data-parallel with torch.distributed.

One step draws subnets from the sampler, accumulates their gradients on the same batch and updates
the shared weights once. Options: NASViT's gradient projection (Eq. 1: the supernet gradient loses
its component against the sub-networks' gradient when they conflict), NASViT's switchable scaling
layers, and distillation from a teacher checkpoint (soft or hard, as in AutoViT's ablation).

Runs write into one folder: `checkpoint.pt` (atomic, every few steps and per epoch; a run started
again on the same folder resumes and ends where an uninterrupted one would), `metrics.csv` and
`accuracy.png` (validation accuracy of the smallest and largest subnets per epoch, with BN
recalibration), `summary.json`. Outputs name the training and the deployment resolution apart.

Distributed: under `torchrun` every process trains on its share of each batch; all processes draw
the same subnets (same sampler seed, losses averaged before sampler feedback) and average their
gradients with all-reduce before each update. DistributedDataParallel's reducer is not used: a
step runs several subnets that leave different weights unused, and gradient projection needs the
supernet's and the sub-networks' gradients apart, so the averaging is explicit.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import pickle  # only for its UnpicklingError: torch.load(weights_only=True) raises it
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from latencykit.errors import LatencykitError
from latencykit.files import atomic_write_bytes
from latencykit.nas.data import Dataset, load_dataset
from latencykit.nas.evaluate import evaluate_subnet
from latencykit.nas.samplers import SAMPLERS, Draw
from latencykit.nas.supernet import Supernet, smallest_resolution, with_classes
from latencykit.space import SearchSpace, load_space

CHECKPOINT_FORMAT = 1


class TrainingError(LatencykitError):
    """A run that cannot go on: NaN loss, a checkpoint of another space, bad options."""


@dataclass(frozen=True)
class TrainConfig:
    space: str = "autovit-xxs"
    out: str = "runs/supernet"
    sampler: str = "sandwich"
    data: str | None = None  # None: scikit-learn digits; else an image folder
    resolution: int = 0  # training resolution; 0: the smallest the space supports
    epochs: int = 3
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    val_fraction: float = 0.2
    seed: int = 0
    grad_projection: bool = False
    scaling: bool = False
    teacher: str | None = None  # a checkpoint of this trainer; its largest subnet teaches
    distill: str = "soft"  # or "hard"
    temperature: float = 1.0
    calib_batches: int = 4
    checkpoint_every: int = 10
    max_steps: int = 0  # stop (resumably) after this many steps in total; 0: no limit
    threads: int = 0  # torch threads per process; 0: torch's default


@dataclass
class TrainProgress:
    """What a progress callback receives after every step."""

    epoch: int
    step: int
    steps: int
    loss: float
    images_per_s: float
    history: list[dict] = field(default_factory=list)


# -- distributed helpers ---------------------------------------------------------------------------

def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> tuple[int, int, torch.device]:
    """Join the process group torchrun describes (gloo on CPU, nccl with CUDA); single process otherwise."""
    cuda = torch.cuda.is_available()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = _world()
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def _average(tensors: list[torch.Tensor]) -> None:
    """All-reduce-average a list of tensors in place (one flat buffer)."""
    rank, world = _world()
    if world == 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1).float() for t in tensors])
    dist.all_reduce(flat)
    flat /= world
    i = 0
    for t in tensors:
        t.copy_(flat[i:i + t.numel()].view_as(t).to(t.dtype))
        i += t.numel()


def _grads(params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]


def project(g_sup: torch.Tensor, g_sub: torch.Tensor) -> torch.Tensor:
    """NASViT Eq. 1: g_sub + proj(g_sup); proj removes g_sup's component along g_sub when they conflict."""
    dot = torch.dot(g_sup, g_sub)
    if dot < 0:
        g_sup = g_sup - dot / g_sub.square().sum().clamp_min(1e-30) * g_sub
    return g_sub + g_sup


# -- files -----------------------------------------------------------------------------------------

def save_checkpoint(path: Path, state: dict) -> None:
    """Tensors and plain containers only (numbers, strings, lists, dicts), so that loading needs
    no pickle beyond `torch.load(weights_only=True)`: a checkpoint from elsewhere cannot run code."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path, space: SearchSpace | None = None) -> dict:
    """A checkpoint of this trainer; with `space`, it must have been trained on that space."""
    if not Path(path).is_file():
        raise TrainingError(f"no checkpoint file at {path}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise TrainingError(f"refusing to load {path}: it holds Python objects other than tensors and plain "
                                "data (a latencykit checkpoint never does; loading it could run code)") from None
        raise TrainingError(f"{path} is not a latencykit supernet checkpoint (not a torch file)") from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainingError(f"cannot read checkpoint {path}: {first}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path} is not a latencykit supernet checkpoint")
    if space is not None and (state["space"], state["digest"], state["classes"]) != (
            space.name, space.digest, space.head.classes):
        raise TrainingError(f"checkpoint {path} is for space {state['space']} ({state['classes']} classes), "
                            f"not {space.name} ({space.head.classes} classes); use another --out folder")
    return state


def supernet_from_checkpoint(path: str | Path) -> tuple[Supernet, dict]:
    state = load_checkpoint(Path(path))
    space = with_classes(load_space(state["config"]["space"]), state["classes"])  # a name or a space file
    if space.digest != state["digest"]:
        raise TrainingError(f"checkpoint {path} was trained on another version of space {state['space']}")
    net = Supernet(space, scaling=state["config"]["scaling"])
    net.load_state_dict(state["model"])
    return net, state


def write_metrics(out: Path, history: list[dict]) -> None:
    if not history:
        return
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(history[0]))
    w.writeheader()
    w.writerows(history)
    atomic_write_bytes(out / "metrics.csv", buf.getvalue().encode())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    epochs = [h["epoch"] for h in history]
    for key, label in (("largest_acc", "largest subnet"), ("smallest_acc", "smallest subnet")):
        ax.plot(epochs, [h[key] for h in history], marker="o", label=label)
    h = history[-1]
    ax.set(xlabel="epoch", ylabel="validation accuracy",
           title=f"{h['space']} on {h['data']} (training resolution {h['train_resolution']}, "
                 f"deployment {h['deploy_resolution']})")
    ax.title.set_fontsize(8)
    ax.grid(alpha=0.3)
    ax.legend()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(out / "accuracy.png", png.getvalue())


# -- training --------------------------------------------------------------------------------------

def _lr(config: TrainConfig, step: int, total: int) -> float:
    warm = max(1, int(config.warmup_fraction * total))
    if step < warm:
        return config.lr * (step + 1) / warm
    return 0.5 * config.lr * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def _teacher(config: TrainConfig, device: torch.device) -> torch.nn.Module | None:
    if not config.teacher:
        return None
    if config.distill not in ("soft", "hard"):
        raise TrainingError(f"--distill must be soft or hard, not {config.distill!r}")
    net, _ = supernet_from_checkpoint(config.teacher)
    teacher = net.extract(net.largest()).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _loss(out: torch.Tensor, y: torch.Tensor, draw: Draw, inplace: torch.Tensor | None,
          teacher_out: torch.Tensor | None, config: TrainConfig) -> torch.Tensor:
    if draw.target == "largest" and inplace is not None:
        return F.kl_div(F.log_softmax(out, 1), F.softmax(inplace, 1), reduction="batchmean")
    loss = F.cross_entropy(out, y)
    if teacher_out is None:
        return loss
    if config.distill == "hard":
        return 0.5 * loss + 0.5 * F.cross_entropy(out, teacher_out.argmax(1))
    t = config.temperature
    kd = F.kl_div(F.log_softmax(out / t, 1), F.softmax(teacher_out / t, 1), reduction="batchmean") * t * t
    return 0.5 * loss + 0.5 * kd


def train_supernet(config: TrainConfig, progress: Callable[[TrainProgress], None] | None = None,
                   dataset: Dataset | None = None) -> tuple[Supernet, dict]:
    """Train (or resume) a supernet; returns it and the run summary (also written to summary.json)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    rank, world, device = init_distributed()
    data = dataset if dataset is not None else load_dataset(config.data)
    space = with_classes(load_space(config.space), len(data.classes))
    resolution = config.resolution or smallest_resolution(space)
    if resolution % smallest_resolution(space):
        raise TrainingError(f"training resolution {resolution} must be a multiple of "
                            f"{smallest_resolution(space)} for {space.name} (whole patches in every stage)")
    if not (config.lr > 0 and config.epochs > 0 and config.batch > 0):
        raise TrainingError("--lr, --epochs and --batch must be positive")
    if config.batch % world:
        raise TrainingError(f"batch {config.batch} does not split evenly over {world} processes")
    train_set, val_set = data.split(config.val_fraction, config.seed)
    steps_per_epoch = train_set.steps_per_epoch(config.batch)
    if steps_per_epoch == 0:
        raise TrainingError(f"{len(train_set)} training images are fewer than one batch of {config.batch}")
    total = steps_per_epoch * config.epochs
    out = Path(config.out)
    ckpt_path = out / "checkpoint.pt"

    torch.manual_seed(config.seed)
    net = Supernet(space, scaling=config.scaling).to(device).train()
    params = [p for p in net.parameters()]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    sampler = SAMPLERS.get(config.sampler)(space, seed=config.seed, total_steps=total)
    teacher = _teacher(config, device)
    step, history = 0, []
    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path, space)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sampler.load_state_dict(state["sampler"])
        step, history = state["step"], state["history"]
    elif world > 1:
        with torch.no_grad():
            for t in [*params, *net.buffers()]:
                dist.broadcast(t, 0)

    if net.resolution_bound:  # position-bias attention: each subnet trains at its own resolution
        resolution = max(space.resolution)
    meta = {"space": space.name, "data": data.name, "sampler": config.sampler,
            "train_resolution": "per architecture" if net.resolution_bound else resolution,
            "deploy_resolution": max(space.resolution)}

    def checkpoint() -> None:
        _average([b for b in net.buffers() if b.is_floating_point()])  # BN statistics of all ranks
        if rank == 0:
            save_checkpoint(ckpt_path, {
                "format": CHECKPOINT_FORMAT, "space": space.name, "digest": space.digest,
                "classes": space.head.classes, "config": asdict(config), "model": net.state_dict(),
                "optimizer": opt.state_dict(), "sampler": sampler.state_dict(), "step": step,
                "history": history, **{k: meta[k] for k in ("train_resolution", "deploy_resolution")}})

    images, busy = 0, 0.0
    while step < total and not (config.max_steps and step >= config.max_steps):
        epoch, b = divmod(step, steps_per_epoch)
        batches = train_set.batches(config.batch, resolution, seed=config.seed * 1000 + epoch, start=b,
                                    rank=rank, world=world)
        for x, y in batches:
            t0 = time.perf_counter()
            loss = _train_step(net, params, opt, sampler, sampler.draws(step), x.to(device), y.to(device),
                               teacher, config, _lr(config, step, total))
            step += 1
            busy += time.perf_counter() - t0
            images += config.batch
            if not math.isfinite(loss):
                raise TrainingError(f"loss is {loss} at step {step} (epoch {epoch + 1}); lower --lr "
                                    f"(now {config.lr:g}) or check the data")
            if progress is not None and rank == 0:
                progress(TrainProgress(epoch, step, total, loss, images / busy, history))
            if config.max_steps and step >= config.max_steps:
                break
            if step % config.checkpoint_every == 0 and step % steps_per_epoch:
                checkpoint()
        if step % steps_per_epoch == 0:
            _average([b for b in net.buffers() if b.is_floating_point()])
            row = {"epoch": epoch + 1, "step": step, **meta}
            for name, arch in (("smallest", net.smallest()), ("largest", net.largest())):
                side = arch.resolution if net.resolution_bound else resolution
                row[f"{name}_acc"] = round(evaluate_subnet(net, arch, train_set, val_set, side,
                                                           config.calib_batches, device=device), 4)
            net.train()
            history.append(row)
            if rank == 0:
                write_metrics(out, history)
        checkpoint()

    summary = {**meta, "epochs_done": step // steps_per_epoch, "steps": step, "total_steps": total,
               "history": history, "checkpoint": str(ckpt_path), "world_size": world,
               "images_per_s": round(images / busy, 2) if busy else None,
               "finished": step >= total}
    if rank == 0:
        atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
    return net, summary


def resize_to(x: torch.Tensor, side: int) -> torch.Tensor:
    return x if x.shape[-1] == side else F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)


def _train_step(net: Supernet, params: list[torch.nn.Parameter], opt: torch.optim.Optimizer, sampler,
                draws: list[Draw], x: torch.Tensor, y: torch.Tensor, teacher: torch.nn.Module | None,
                config: TrainConfig, lr: float) -> float:
    """One update: every drawn subnet's gradient on the batch, (projected,) averaged over ranks."""
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    teacher_out = None
    if teacher is not None:
        with torch.no_grad():
            teacher_out = teacher(resize_to(x, teacher.resolution) if net.resolution_bound else x)
    inplace, g_sup, total = None, None, 0.0
    draws = sorted(draws, key=lambda d: d.role != "sup")  # the supernet first: it teaches in place
    for d in draws:
        net.set_active(d.arch)
        out = net(resize_to(x, d.arch.resolution) if net.resolution_bound else x)
        loss = _loss(out, y, d, inplace, teacher_out, config)
        loss.backward()
        if d.role == "sup":
            inplace = out.detach()
            if config.grad_projection:
                g_sup = torch.cat([g.reshape(-1) for g in _grads(params)])
                opt.zero_grad(set_to_none=True)
        value = torch.tensor([loss.item()], device=x.device)
        _average([value])
        sampler.observe(d.arch, float(value))
        total += float(value)
    grads = _grads(params)
    if g_sup is not None:
        g_sub = torch.cat([g.reshape(-1) for g in grads])
        _average([g_sup, g_sub])
        g = project(g_sup, g_sub)
        i = 0
        for p in params:
            p.grad = g[i:i + p.numel()].view_as(p).clone()
            i += p.numel()
    else:
        for p, g in zip(params, grads):
            p.grad = g
        _average([p.grad for p in params])
    opt.step()
    return total / len(draws)
