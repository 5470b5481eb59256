"""Kernel-level prediction: detection on real exported graphs (rules as data), kernel profiling on the
host runtime at a small sample count, safe storage, prediction with a breakdown, unknown operators."""

from __future__ import annotations

import collections
import json
import platform
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from latencykit.cli import main
from latencykit.devices import get_device
from latencykit.devices.nchwc import Reorder, reorder_graph
from latencykit.export import default_cache
from latencykit.kernels import ACTS, FEATURES, alignment, alignments, build_kernel, sample_config
from latencykit.lut import kernels as kmod
from latencykit.lut.kernels import Kernel, KernelError, KernelPredictor, Network, blocks_layout, detect, kernel_path
from latencykit.random_nets import random_network
from latencykit.zoo import Variant, build


def zoo_onnx(family: str, width: float = 0.5, resolution: int = 64) -> Path:
    return default_cache().export(*build(Variant(family, width, resolution)), "onnx")


def kinds(path: Path) -> collections.Counter:
    return collections.Counter(k.kind for k in detect(path).kernels)


def test_mobilenet_v2_kernels_with_relu6_fused_into_convolutions() -> None:
    found = detect(zoo_onnx("mobilenet-v2"), "tflite")
    counts = collections.Counter(k.kind for k in found.kernels)
    assert not found.unknown and counts["act"] == 0  # every ReLU6 (Clip) fused
    assert counts["dwconv"] == 17 and counts["add"] == 10 and counts["linear"] == 1
    dw = next(k for k in found.kernels if k.kind == "dwconv")
    assert dw.features["relu"] == 1 and dw.ops == ("Conv", "Clip")
    # ONNX Runtime also fuses the residual Add into the convolution before it; XNNPACK does not
    onnx_counts = collections.Counter(k.kind for k in detect(zoo_onnx("mobilenet-v2"), "onnx").kernels)
    assert onnx_counts["add"] == 0 and onnx_counts["conv"] == counts["conv"]
    assert sum(k.ops == ("Conv", "Add") for k in detect(zoo_onnx("mobilenet-v2"), "onnx").kernels) == 10


def test_silu_is_one_kernel_and_a_squeeze_excite_gate_is_not_silu() -> None:
    found = detect(zoo_onnx("efficientnet-b0"), "tflite")
    acts = collections.Counter(ACTS[k.features["kind"]] for k in found.kernels if k.kind == "act")
    assert set(acts) == {"silu", "sigmoid"} and acts["sigmoid"] == 16  # 16 SE gates
    assert collections.Counter(k.kind for k in found.kernels)["mul"] == 16  # each gate's multiply
    # ONNX Runtime fuses each gate's Sigmoid into the convolution before it
    onnx_found = detect(zoo_onnx("efficientnet-b0"), "onnx")
    assert {ACTS[k.features["kind"]] for k in onnx_found.kernels if k.kind == "act"} == {"silu"}
    assert sum(k.ops == ("Conv", "Sigmoid") for k in onnx_found.kernels) == 16


def test_kernels_match_the_graph_onnx_runtime_runs_for_shufflenet_and_mobilenet_v3(tmp_path) -> None:
    """ONNX Runtime runs the Slices that share an input (ShuffleNetV2's channel split) as one Split, and
    MobileNetV3's HardSwish inside the convolution before it: detection counts the kernels its optimized
    graph runs (XNNPACK keeps them apart)."""
    import onnx
    import onnxruntime as ort

    def optimized(path: Path) -> collections.Counter:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = str(tmp_path / f"{path.stem}-optimized.onnx")
        so.log_severity_level = 3
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        return collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)

    shufflenet = zoo_onnx("shufflenet-v2")
    slices = [k for k in detect(shufflenet).kernels if k.kind == "slice"]
    ran = optimized(shufflenet)
    assert len(slices) == ran["Split"] + ran["Slice"] == 13 and all(k.ops == ("Slice", "Slice") for k in slices)
    assert kinds(shufflenet)["concat"] == ran["Concat"]
    assert collections.Counter(k.kind for k in detect(shufflenet, "tflite").kernels)["slice"] == 26
    mobilenet = zoo_onnx("mobilenet-v3")
    assert sum("HardSwish" in k.ops for k in detect(mobilenet).kernels if k.kind in ("conv", "dwconv")) == 20
    ran = optimized(mobilenet)  # only the classifier's HardSwish, after a Gemm, runs alone (as HardSigmoid and Mul)
    assert kinds(mobilenet)["act"] == ran["HardSigmoid"] == 1 and ran["HardSwish"] == 0


def test_attention_and_gelu_in_a_vit() -> None:
    counts = kinds(zoo_onnx("vit-tiny"))
    assert counts["matmul"] == 24 and counts["softmax"] == 12 and counts["layernorm"] == 25
    # each attention's scale (a Mul by a constant) fuses into its MatMul in ONNX Runtime, not in XNNPACK
    scaled = [k for k in detect(zoo_onnx("vit-tiny")).kernels if k.kind == "matmul" and len(k.ops) == 2]
    assert len(scaled) == 12 and all(k.ops == ("MatMul", "Mul") for k in scaled) and counts["mul"] == 0
    assert collections.Counter(k.kind for k in detect(zoo_onnx("vit-tiny"), "tflite").kernels)["mul"] == 12
    gelus = [k for k in detect(zoo_onnx("vit-tiny")).kernels if k.kind == "act"]
    assert len(gelus) == 12 and all(ACTS[k.features["kind"]] == "gelu" and len(k.ops) == 5 for k in gelus)


def test_fusion_rules_are_data(monkeypatch) -> None:
    path = zoo_onnx("mobilenet-v2")
    rules = json.loads(json.dumps(kmod.rules()))
    for kind in ("conv", "dwconv"):
        rules["fuse"][kind] = ["Relu"]
    monkeypatch.setattr(kmod, "rules", lambda: rules)
    assert collections.Counter(k.kind for k in detect(path, "tflite").kernels)["act"] == 35  # ReLU6 unfused


@pytest.mark.parametrize("kind", sorted(set(FEATURES) - {"reorder"}))  # a reorder is the runtime's own, below
def test_each_kernel_type_exports_to_the_kernel_it_is(kind) -> None:
    import numpy as np

    f = sample_config(kind, np.random.default_rng(1))
    path = default_cache().export(*build_kernel(kind, f), "onnx")
    found = detect(path)
    assert [k.kind for k in found.kernels] == [kind] and not found.unknown
    if kind not in ("act", "add", "mul", "concat", "slice", "transpose"):  # shapes rounded to a grid
        assert found.kernels[0].features == f


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="ONNX Runtime blocks convolutions on x86")
def test_the_runtime_s_layout_changes_are_read_from_the_graph_it_runs(tmp_path) -> None:
    """A lone convolution is converted into ONNX Runtime's blocked layout and back (two reorders); a lone
    reorder written by `reorder_graph` runs, and is the one layout change of its own graph."""
    host = get_device("host")
    conv = default_cache().export(*build_kernel("conv", {"hw": 8, "cin": 16, "cout": 24, "k": 3, "stride": 1,
                                                         "relu": 0}), "onnx")
    assert host.layout_changes(conv) == [Reorder(16, 8, 0), Reorder(24, 8, 1)]
    for r in (Reorder(20, 14, 0), Reorder(20, 14, 1), Reorder(30, 7, 1)):  # out of the layout: any channels
        path = reorder_graph(r, tmp_path / f"reorder{r.c}-{r.out}.onnx")
        assert host.layout_changes(path) == [r]
        handle = host.open(path)
        assert host.measure(handle, 3) > 0
    assert get_device("host-litert").layout_changes(conv) == []  # XNNPACK: no layout change to count


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="ONNX Runtime blocks convolutions on x86")
def test_a_transpose_folded_into_a_channels_last_reorder_is_counted_once() -> None:
    """ConvNeXt permutes to channels-last around its layer norms: ONNX Runtime folds the Transpose beside a
    blocked convolution into its reorder (channels_last). The reorder's map is read as C x H x W (it was
    read from the NHWC side as H channels of C x C), and the folded transpose is no kernel of its own."""
    import onnx

    host = get_device("host")
    path = zoo_onnx("convnext")
    ran = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Transpose"]
    found = kmod.kernels_of(path, host)
    reorders = [k for k in found.kernels if k.kind == "reorder"]
    folded = [k for k in reorders if "Transpose" in k.ops]
    assert len(folded) == 18 and len(reorders) == 28
    assert sum(k.kind == "transpose" for k in found.kernels) == len(ran) - len(folded)
    widths = {k.features["c"] for k in found.kernels if k.kind == "dwconv"}
    assert {k.features["c"] for k in reorders} <= widths and {k.features["hw"] for k in reorders} <= {16, 8, 4, 2}


def unknown_op_model(tmp_path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])
    graph = helper.make_graph([helper.make_node("LRN", ["x"], ["h"], size=3), helper.make_node("Relu", ["h"], ["y"])],
                              "g", [x], [y])
    path = tmp_path / "lrn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_profile_predict_and_store_safely(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(kmod, "SHARE", {"conv": 2})  # a short run: 4 convolutions, 2 of every other type
    with pytest.raises(SystemExit) as info:
        main(["profile", "--kernels", "-d", "host", "--kernel-samples", "2", "--rounds", "1", "--kernel-networks", "2",
              "--json"])
    out = capsys.readouterr()
    assert info.value.code == 0, out.err
    data = json.loads(out.out)
    assert data["composition"]["networks"] == 2  # two random networks measured whole, their kernels stored
    assert data["held_out"] is None  # too few to hold any out
    blocked = blocks_layout(get_device("host"), default_cache())  # ONNX Runtime on x86: reorders sampled too
    assert set(data["samples"]) == (set(FEATURES) if blocked else set(FEATURES) - {"reorder"})
    assert data["samples"]["conv"] == 4 and data["samples"]["gconv"] == 2
    stored = json.loads(kernel_path("host").read_text())
    assert stored["format"] == "latencykit-kernel-predictor" and stored["info"]["device_info"]["device"] == "host"
    assert len(stored["networks"]) == 2 and all(n["ms"] > 0 and n["kernels"] for n in stored["networks"])

    model = zoo_onnx("squeezenet")
    with pytest.raises(SystemExit) as info:
        main(["predict", str(model), "-d", "host", "--breakdown", "--json"])
    out = capsys.readouterr()
    assert info.value.code == 0, out.err
    pred = json.loads(out.out)
    found = detect(model)
    # squeezenet: its classifier's output leaves the blocked layout (and, where blocks are 16 channels wide as
    # with AVX-512, so do its 8-channel squeezes)
    reorders = get_device("host").layout_changes(model)
    assert not blocked or len(reorders) >= 1
    assert pred["latency_ms"] > 0 and len(pred["kernels"]) == len(found.kernels) + len(reorders)
    assert [k["config"] for k in pred["kernels"] if k["kernel"] == "reorder"] == [
        {"c": r.c, "hw": r.hw, "out": r.out} for r in reorders]
    assert found.free_nodes > 0 and pred["free_nodes_ms"] == pytest.approx(found.free_nodes * stored["node_ms"])
    assert sum(k["ms"] for k in pred["kernels"]) + pred["overhead_ms"] + pred["free_nodes_ms"] == pytest.approx(
        pred["latency_ms"], rel=1e-12)
    # stored as samples and refitted deterministically: the same predictions after a reload
    again = KernelPredictor.load(kernel_path("host")).predict(
        [*found.kernels, *(Kernel("reorder", (("c", r.c), ("hw", r.hw), ("out", r.out)), (), ()) for r in reorders)],
        found.free_nodes)
    assert again == pytest.approx(pred["latency_ms"], rel=1e-12)
    loaded = KernelPredictor.load(kernel_path("host"))  # many models, one fit: the same prediction
    same = kmod.predict_model(model, "host", predictor=loaded).latency_ms
    assert same == pytest.approx(pred["latency_ms"], rel=1e-12)
    with pytest.raises(KernelError, match="profiled on host, not host-litert"):
        kmod.predict_model(model, "host-litert", predictor=loaded)

    # --rescale: every kernel on the device's speed now (its reference block now over its time when profiled)
    with pytest.raises(SystemExit) as info:
        main(["predict", str(model), "-d", "host", "--rescale", "--breakdown", "--json"])
    out = capsys.readouterr()
    assert info.value.code == 0, out.err
    now = json.loads(out.out)
    assert pred["scale"] == 1.0 and 0.5 < now["scale"] < 2.0  # seconds apart: near 1
    assert now["latency_ms"] == pytest.approx(pred["latency_ms"] * now["scale"], rel=1e-9)
    assert [k["ms"] for k in now["kernels"]] == pytest.approx([k["ms"] * now["scale"] for k in pred["kernels"]])
    unrecorded = KernelPredictor("host", loaded.samples, loaded.overhead_ms, loaded.node_ms, {}, loaded.networks)
    with pytest.raises(KernelError, match="cannot be rescaled"):
        kmod.predict_model(model, "host", predictor=unrecorded, rescale=True)

    # the predictor says how close it came to networks it was not fitted on (two networks: too few to hold out)
    assert pred["held_out"] is None
    ten_times = KernelPredictor("host", loaded.samples, loaded.overhead_ms, loaded.node_ms, loaded.info,
                                loaded.networks * 10)
    ten_times.save(kernel_path("host"))
    with pytest.raises(SystemExit) as info:
        main(["predict", str(model), "-d", "host"])
    out = capsys.readouterr().out
    held = ten_times.held_out()
    assert info.value.code == 0 and held["networks"] == 20
    assert f"held out, 20 random networks: {held['within_10_pct']:.0f}% within ±10%" in out
    assert all(len(line) <= 100 for line in out.splitlines())

    # an unknown operator is named, with the measured fallback
    with pytest.raises(SystemExit) as info:
        main(["predict", str(unknown_op_model(tmp_path)), "-d", "host"])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and "LRN (1 node)" in err[0] and "latencykit measure" in err[0]

    # a damaged or crafted file is refused in one line
    path, net = kernel_path("host"), stored["networks"][0]
    for bad in ("{not json", json.dumps({**stored, "samples": {"conv": [{"config": {}, "ms": 1}]}}),
                json.dumps({**stored, "samples": {"exec": []}}), json.dumps({**stored, "overhead_ms": float("nan")}),
                json.dumps({**stored, "format": "pickle"}),
                json.dumps({**stored, "networks": [{**net, "kernels": [{"kernel": "exec", "config": {}}]}]}),
                json.dumps({**stored, "networks": [{**net, "ms": -1}]})):
        path.write_text(bad)
        with pytest.raises(KernelError):
            KernelPredictor.load(path)
        with pytest.raises(SystemExit) as info:
            main(["predict", str(model), "-d", "host"])
        assert info.value.code == 2 and capsys.readouterr().err.startswith("error: ")


def test_predict_without_a_kernel_predictor_says_what_to_run(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["predict", str(zoo_onnx("squeezenet")), "-d", "host-litert"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "profile --kernels --device host-litert" in err


def test_a_kernel_type_missing_from_the_predictor_is_named() -> None:
    model = KernelPredictor("host", {"conv": [({"hw": 8, "cin": 8, "cout": 8, "k": 1, "stride": 1, "relu": 0}, 0.01)] * 3},
                            0.001)
    with pytest.raises(KernelError, match="no samples of kernel type"):
        model.predict(list(detect(zoo_onnx("squeezenet")).kernels))


def test_profile_needs_a_space_or_kernels_not_both(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["profile", "-d", "host"])
    assert info.value.code == 2 and "--kernels" in capsys.readouterr().err
    assert get_device("host").format == "onnx"


def test_a_transpose_s_contiguous_run_is_read_from_its_permutation() -> None:
    runs = collections.Counter(k.features["run"] for k in detect(zoo_onnx("vit-tiny")).kernels
                               if k.kind == "transpose")
    assert runs[1] > 0 and max(runs) > 1  # keys transposed value by value; heads split row by row
    for run in (1, 16):
        path = default_cache().export(*build_kernel("transpose", {"elements": 4096, "run": run}), "onnx")
        assert detect(path).kernels[0].features["run"] == run


def test_a_predictor_with_earlier_transpose_samples_still_loads(tmp_path) -> None:
    conv = {"hw": 8, "cin": 8, "cout": 8, "k": 1, "stride": 1, "relu": 0}
    doc = {"format": kmod.FORMAT, "version": 1, "device": "host", "overhead_ms": 0.01, "node_ms": 0.001, "info": {},
           "samples": {"conv": [{"config": conv, "ms": 0.05}] * 3,
                       "transpose": [{"config": {"elements": 4096, "inner": 8}, "ms": 0.03}] * 3}}
    path = tmp_path / "earlier.json"
    path.write_text(json.dumps(doc))
    model = KernelPredictor.load(path)  # its transposes swapped the last two axes: every value moved alone
    assert model.samples["transpose"][0] == ({"elements": 4096, "run": 1}, 0.03)
    assert model.samples["conv"][0] == (conv, 0.05)


def test_channel_counts_in_part_blocks_are_sampled_and_seen_by_the_fit() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    drawn = [sample_config("dwconv", rng)["c"] for _ in range(400)]
    assert 0.2 < np.mean([c % 4 != 0 for c in drawn]) < 0.45  # ShuffleNet's 58 and 116 are in the prior
    assert alignment("dwconv", {"c": 58}) == 2 and alignment("dwconv", {"c": 60}) == 4
    assert alignment("conv", {"cin": 3, "cout": 64}) == 1 and alignment("conv", {"cin": 64, "cout": 128}) == 16
    assert alignment("linear", {"m": 1, "k": 58, "n": 7, "relu": 0}) == 16  # no channels, nothing to align
    # ONNX Runtime keeps a depthwise convolution of 58 channels out of its blocked layout, 60 in it
    blocked = {c: bool(get_device("host").layout_changes(default_cache().export(
        *build_kernel("dwconv", {"hw": 8, "c": c, "k": 3, "stride": 1, "relu": 0}), "onnx"))) for c in (58, 60)}
    if platform.machine() in ("x86_64", "AMD64"):
        assert blocked == {58: False, 60: True}


def test_channels_per_group_and_narrow_inputs_are_sampled_and_told_apart() -> None:
    import numpy as np

    # RegNet's grouped 3x3 of 8 channels per group takes another path than one of 16 (1.6-3x slower here),
    # though its channels in and out are whole blocks; so does a 1x1 from 8 channels (MobileNetV2 at width 0.5)
    assert alignments("gconv", {"cin": 208, "cout": 208, "groups": 26}) == (16, 16, 8)
    assert alignments("gconv", {"cin": 256, "cout": 256, "groups": 16}) == (16, 16, 16)
    assert alignments("conv", {"cin": 8, "cout": 48}) == (8, 16, 16)
    assert alignments("add", {"elements": 58, "broadcast": 0}) == (16, 16, 16)
    rng = np.random.default_rng(0)
    grouped = [sample_config("gconv", rng) for _ in range(300)]
    assert min(f["hw"] for f in grouped) >= 4
    assert {f["cin"] // f["groups"] for f in grouped} == {8, 16, 24, 32}
    convs = [sample_config("conv", rng) for _ in range(500)]
    assert any(f["cin"] == 8 and f["hw"] >= 16 for f in convs) and any(f["cout"] == 8 and f["hw"] >= 16 for f in convs)


def test_random_networks_are_seeded_and_made_of_known_kernels() -> None:
    seen = collections.Counter()
    for seed in range(8):
        net, (x,) = random_network(seed)
        again, (y,) = random_network(seed)
        assert repr(net) == repr(again) and bool((x == y).all())  # one seed, one network: one export
        found = detect(default_cache().export(net, (x,), "onnx"))
        assert not found.unknown and found.kernels
        seen.update(k.kind for k in found.kernels)
    assert {"conv", "dwconv", "linear", "add", "concat", "slice", "layernorm", "matmul", "softmax"} <= set(seen)


def _conv(hw: int, c: int) -> dict:
    return {"hw": hw, "cin": c, "cout": c, "k": 1, "stride": 1, "relu": 0}


def test_the_composition_learns_from_networks_how_kernels_add_up_inside_one() -> None:
    """Networks of convolutions that run 1.3x their kernels' predicted time alone plus 20 us each: the fitted
    composition predicts a new such network within 3%; without networks the prediction is the plain sum."""
    import numpy as np

    rng = np.random.default_rng(0)
    samples = [(_conv(hw, c), 1e-5 * hw * hw * c * c / 64 + 0.01) for hw in (4, 8, 16, 32) for c in (8, 16, 32, 64)]
    plain = KernelPredictor("host", {"conv": samples}, 0.01, 0.001)

    def network() -> list[Kernel]:
        configs = [_conv(int(rng.choice([4, 8, 16, 32])), int(rng.choice([8, 16, 32, 64])))
                   for _ in range(int(rng.integers(3, 12)))]
        return [Kernel("conv", tuple(f.items()), (), ()) for f in configs]

    def truth(kernels: list[Kernel]) -> float:
        return float((1.3 * plain.predict_kernels(kernels) + 0.02).sum() + 0.01)

    nets = [network() for _ in range(40)]
    measured = tuple(Network(s, tuple((k.kind, k.config) for k in ks), 0, truth(ks)) for s, ks in enumerate(nets))
    composed = KernelPredictor("host", {"conv": samples}, 0.01, 0.001, networks=measured)
    assert composed.composition.networks == 40
    new = network()
    assert composed.predict(new) == pytest.approx(truth(new), rel=0.03)
    assert composed.held_out()["networks"] == 40 and composed.held_out()["within_10_pct"] >= 90
    # networks 25% off their kernels' composition one way or the other: the held-out error shows it
    noisy = tuple(replace(n, ms=n.ms * (1.25 if n.seed % 2 else 0.75)) for n in measured)
    held = KernelPredictor("host", {"conv": samples}, 0.01, 0.001, networks=noisy).held_out()
    assert held["within_10_pct"] < 20 and plain.held_out() is None
    assert plain.predict(new) == pytest.approx(float(plain.predict_kernels(new).sum()) + 0.01, rel=1e-12)
    assert plain.predict(new) < 0.8 * truth(new)


def test_each_activation_function_has_its_own_cost_per_value() -> None:
    """Eight functions, each with its own cost per value (GELU's erf several times ReLU's), 120 noisy samples
    among them as a profile takes: each function's time on maps of 20k-1M values comes out near its own.
    Pooled through the trees alone (the fit before), 38% were within 15% and the worst 0.44-3.5x."""
    import numpy as np

    rng = np.random.default_rng(0)
    cost = [c * 1e-7 for c in (1, 4, 2, 2, 3, 6, 1, 4)]  # ms per value, indexed as ACTS
    samples = []
    for _ in range(120):
        k, n = int(rng.integers(len(ACTS))), int(np.exp(rng.uniform(np.log(256), np.log(2e6))))
        samples.append(({"elements": n, "kind": k}, (cost[k] * n + 0.006) * rng.normal(1, 0.03)))
    model = KernelPredictor("host", {"act": samples}, 0.006, 0.0005)
    wanted = [(k, int(n)) for k in range(len(ACTS)) for n in np.geomspace(20_000, 1_000_000, 6)]
    got = model.predict_kernels([Kernel("act", (("elements", n), ("kind", k)), (), ()) for k, n in wanted])
    ratio = np.array([t / (cost[k] * n) for t, (k, n) in zip(got, wanted)])
    assert np.mean(np.abs(ratio - 1) <= 0.15) >= 0.7 and 0.6 < ratio.min() and ratio.max() < 2.0
