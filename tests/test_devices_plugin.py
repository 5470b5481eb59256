"""A third-party device installed as a distribution registers through `latencykit.devices`."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MICRO = str(REPO / "tests" / "fake_adb" / "micro.json")

PLUGIN = '''
"""A third-party device: ONNX Runtime with its own session settings, written against the contract only."""
import time
from pathlib import Path

import numpy as np

from latencykit.devices.base import Availability, Device


class LabDevice(Device):
    format = "onnx"

    def __init__(self, threads: int = 1) -> None:
        self.name, self.threads = "lab-cpu", threads

    def check(self) -> Availability:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            return Availability(False, f"onnxruntime missing: {exc}")
        return Availability(True)

    def describe(self) -> dict:
        import onnxruntime
        return {"device": self.name, "runtime": f"onnxruntime {onnxruntime.__version__}", "threads": self.threads}

    def open(self, model: Path):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
        feeds = {i.name: np.zeros(i.shape, np.float32) for i in sess.get_inputs()}
        sess.run(None, feeds)
        return sess, feeds

    def measure(self, handle, runs: int) -> float:
        sess, feeds = handle
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            sess.run(None, feeds)
            times.append(time.perf_counter() - t0)
        return float(np.median(times) * 1e3)
'''


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    """The plugin built and installed into its own folder (never into the shared environment)."""
    src = tmp_path_factory.mktemp("plugin-src")
    (src / "lab_device.py").write_text(PLUGIN)
    (src / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "latencykit-lab-device"
        version = "0.1.0"

        [project.entry-points."latencykit.devices"]
        lab-cpu = "lab_device:LabDevice"

        [tool.setuptools]
        py-modules = ["lab_device"]
    '''))
    target = tmp_path_factory.mktemp("plugin-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(src)], check=True, capture_output=True, timeout=300)
    return target


def run(plugin: Path, *args: str) -> subprocess.CompletedProcess:
    """`python ARGS` with the plugin's folder on the path (and this checkout's latencykit)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(plugin)])}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300)


def test_installed_plugin_is_listed_passes_the_contract_and_profiles(plugin_path, home):
    res = run(plugin_path, "-m", "latencykit", "devices", "--json")
    assert res.returncode == 0, res.stderr
    listed = {d["device"]: d for d in json.loads(res.stdout)}
    assert listed["lab-cpu"]["available"] and listed["lab-cpu"]["format"] == "onnx" and "pixel4" in listed
    res = run(plugin_path, "-c", textwrap.dedent('''
        import json
        from latencykit.devices import get_device
        from latencykit.devices.conformance import check_device
        print(json.dumps(check_device(get_device("lab-cpu", threads=1))))
    '''))
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["available"] and report["latency_ms"] > 0
    res = run(plugin_path, "-m", "latencykit", "profile", "--device", "lab-cpu", "--space", MICRO, "--rounds", "2",
              "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["device"] == "lab-cpu" and summary["entries"] == 4
