"""Data-parallel supernet training: 2 CPU processes under torchrun (gloo) stay in sync."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_nas_supernet import TINY  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys, numpy as np, torch, torch.distributed as dist
from latencykit.nas.data import digits
from latencykit.nas.train import TrainConfig, train_supernet
space, out = sys.argv[1], sys.argv[2]
cfg = TrainConfig(space=space, out=out, sampler="sandwich", epochs=1, batch=16, resolution=16, calib_batches=1,
                  grad_projection=True, max_steps=3, seed=5, threads=1)
net, summary = train_supernet(cfg, dataset=digits().subset(np.arange(80)))
rank = dist.get_rank()
torch.save({"state": net.state_dict(), "world": summary["world_size"]}, f"{out}/rank{rank}.pt")
dist.destroy_process_group()
"""


def test_two_gloo_processes_stay_in_sync(tmp_path):
    space = tmp_path / "tiny.json"
    space.write_text(json.dumps(TINY))
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(space), str(tmp_path)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    a, b = r0["state"], r1["state"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "ranks diverged"
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 3
    assert all(torch.equal(ckpt["model"][k], a[k]) for k in a)  # rank 0 saved the synced weights
