"""The kernel predictor scored on the model zoo (held out: it is trained on sampled kernels and random
networks only, latencykit.random_nets).

For each device: profile kernels (`profile_kernels`, timed), then measure every zoo variant whole with
the tables' whole-network protocol (one run per reading, beside references) twice, in two separate
processes (the second pass is the test-retest noise floor), predict each from its ONNX graph's kernels
(and, on host, the reorders ONNX Runtime adds), and report the share within ±5% / ±10%, with and without
the composition the profile fitted on its random networks (same readings). With
--profile-retest the kernels are profiled again in a third process after the zoo (same seed, so the same
samples): how far each kernel type's samples moved, and the zoo score of the second profile's predictor.
With --kernel-check the zoo's own kernels are measured alone (for scoring, never fitted): the predictor's
error against each kernel alone, and how far each network's kernels alone sum from it whole (composition).

Run from the repository root, with nothing else running:
    PYTHONPATH=$PWD python benchmarks/any_model.py --devices host --samples 30 --profile-retest --kernel-check
Writes benchmarks/results/any_model.md (and any_model.json beside it), or --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "any_model.md"


def zoo(widths: list[float], resolutions: list[int]):
    from latencykit.zoo import variants

    return variants(tuple(resolutions), tuple(widths))


def measure_pass(device_name: str, widths: list[float], resolutions: list[int], rounds: int, seed: int) -> dict:
    """Every zoo variant measured whole on the device, drift-corrected, in one interleaved run."""
    import torch

    from latencykit.devices import get_device
    from latencykit.export import default_cache
    from latencykit.lut.protocol import REF_KEY, Protocol, export_reference, measure_models
    from latencykit.zoo import build

    torch.set_num_threads(1)
    device = get_device(device_name)
    cache = default_cache()
    files = {v.name: cache.export(*build(v), device.format) for v in zoo(widths, resolutions)}
    stats = measure_models(device, files, export_reference(cache, device.format), Protocol(rounds=rounds, seed=seed),
                           whole=set(files))  # as tables measure whole networks: one run per reading
    return {k: stats[k].latency_ms for k in [*files, REF_KEY]}  # and the reference block's median


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", default="host")
    ap.add_argument("--samples", type=int, default=30, help="kernel samples per type (x SHARE)")
    ap.add_argument("--widths", default="0.5,1.0")
    ap.add_argument("--resolutions", default="128,192")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of kernel profiling")
    ap.add_argument("--model-rounds", type=int, default=15, help="rounds of the zoo's whole-model measurement")
    ap.add_argument("--pass", dest="one_pass", nargs=2, metavar=("DEVICE", "JSON"), help=argparse.SUPPRESS)
    ap.add_argument("--profile-pass", nargs=2, metavar=("DEVICE", "JSON"), help=argparse.SUPPRESS)
    ap.add_argument("--profile-retest", action="store_true",
                    help="profile the kernels again in a second process and report how far the same samples moved")
    ap.add_argument("--kernel-check", action="store_true",
                    help="measure the zoo's kernels alone: the predictor's own error and the composition gap")
    ap.add_argument("--kernel-networks", type=int, default=None,
                    help="random networks measured whole for the composition (default: profile_kernels')")
    ap.add_argument("--home", default=None, help="LATENCYKIT_HOME to keep (kernel predictors, exports)")
    ap.add_argument("--out", type=Path, default=OUT, help="Markdown report (its .json beside it)")
    args = ap.parse_args()
    widths = [float(w) for w in args.widths.split(",")]
    resolutions = [int(r) for r in args.resolutions.split(",")]
    if args.profile_pass:  # the same kernel samples (same seed) profiled in this separate process
        from latencykit.devices import get_device
        from latencykit.lut.kernels import profile_kernels

        device, out = args.profile_pass
        profile_kernels(get_device(device), args.samples, args.rounds, path=Path(out))
        return
    if args.one_pass:
        device, out = args.one_pass
        Path(out).write_text(json.dumps(measure_pass(device, widths, resolutions, args.model_rounds, seed=1)))
        return
    if args.home:
        os.environ["LATENCYKIT_HOME"] = args.home
        run(args, widths, resolutions)
        return
    # a fresh home holds every sample's export (8-9 GB): removed afterwards, or a few runs fill the disk
    with tempfile.TemporaryDirectory(prefix="latencykit-any-model-") as home:
        os.environ["LATENCYKIT_HOME"] = home
        run(args, widths, resolutions)


def run(args, widths: list[float], resolutions: list[int]) -> None:
    import torch

    from latencykit.devices import get_device
    from latencykit.devices.host import cpu_name
    from latencykit.export import default_cache
    from latencykit.lut.kernels import kernel_path, load_kernel_predictor, predict_model, profile_kernels
    from latencykit.lut.protocol import REF_KEY
    from latencykit.zoo import build

    torch.set_num_threads(1)
    report = {"command": "PYTHONPATH=$PWD python benchmarks/any_model.py " + " ".join(sys.argv[1:]),
              "cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(), "devices": {}}
    for name in args.devices.split(","):
        device = get_device(name)
        start = time.perf_counter()
        if kernel_path(name).exists():
            model = load_kernel_predictor(name)
        else:
            more = {} if args.kernel_networks is None else {"networks": args.kernel_networks}
            model, _ = profile_kernels(device, args.samples, args.rounds, **more)
        profile_s = model.info.get("seconds", time.perf_counter() - start)
        if args.kernel_check and not model.info.get("reference_ms"):
            sys.exit(f"--kernel-check needs a {name} kernel profile that records its reference block: profile again")
        variants = zoo(widths, resolutions)
        onnx = {v.name: default_cache().export(*build(v), "onnx") for v in variants}
        loads = [os.getloadavg()[0]]
        first = measure_pass(name, widths, resolutions, args.model_rounds, seed=0)
        with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
            subprocess.run([sys.executable, __file__, "--pass", name, tmp.name, "--widths", args.widths,
                            "--resolutions", args.resolutions, "--model-rounds", str(args.model_rounds)], check=True,
                           env=os.environ.copy())
            second = json.loads(Path(tmp.name).read_text())
        loads.append(os.getloadavg()[0])
        rows = []
        predictions = {v.name: predict_model(onnx[v.name], name, predictor=model) for v in variants}
        for v in variants:
            measured = (first[v.name] + second[v.name]) / 2
            predicted = predictions[v.name].latency_ms
            alone = uncomposed(model, predictions[v.name])
            in_refs = (first[v.name] / first[REF_KEY] + second[v.name] / second[REF_KEY]) / 2
            rows.append({"model": v.name, "measured_ms": measured, "first_ms": first[v.name],
                         "second_ms": second[v.name], "predicted_ms": predicted,
                         "error_pct": 100 * (predicted / measured - 1),
                         "retest_pct": 100 * (second[v.name] / first[v.name] - 1),
                         "uncomposed_error_pct": 100 * (alone / measured - 1),
                         "ref_error_pct": 100 * (predicted / model.info["reference_ms"] / in_refs - 1)
                         if model.info.get("reference_ms") else None})
        retest_profile = profile_retest(name, model, onnx, first, second, args) if args.profile_retest else None
        check = kernel_check(device, model, predictions, first, rows) if args.kernel_check else None
        err = np.abs([r["error_pct"] for r in rows])
        retest = np.abs([r["retest_pct"] for r in rows])
        ref_err = np.abs([r["ref_error_pct"] for r in rows if r["ref_error_pct"] is not None])
        plain = np.abs([r["uncomposed_error_pct"] for r in rows])
        report["devices"][name] = {
            "kernel_samples": {k: len(v) for k, v in model.samples.items()}, "profile_s": profile_s,
            "profile_retest": retest_profile, "kernel_check": check,
            "ref_within_5": float((ref_err <= 5).mean() * 100) if len(ref_err) else None,
            "ref_within_10": float((ref_err <= 10).mean() * 100) if len(ref_err) else None,
            "ref_mape": float(ref_err.mean()) if len(ref_err) else None,
            "within_5": float((err <= 5).mean() * 100), "within_10": float((err <= 10).mean() * 100),
            "uncomposed_within_5": float((plain <= 5).mean() * 100),
            "uncomposed_within_10": float((plain <= 10).mean() * 100), "uncomposed_mape": float(plain.mean()),
            "composition": model.composition.to_dict(),
            "mape": float(err.mean()), "retest_within_5": float((retest <= 5).mean() * 100),
            "retest_within_10": float((retest <= 10).mean() * 100), "retest_mape": float(retest.mean()),
            "runtime": device.describe().get("runtime"), "load": loads, "rows": rows}
        write(report, args.out)


def as_kernels(rows: list[dict]) -> list:
    """A prediction's breakdown rows as kernels, to predict them again (alone, before composition)."""
    from latencykit.lut.kernels import Kernel

    return [Kernel(k["kernel"], tuple(k["config"].items()), (), ()) for k in rows]


def uncomposed(model, prediction) -> float:
    """The prediction as the plain sum of the kernels' predicted times alone (no composition)."""
    return float(model.predict_kernels(as_kernels(prediction.kernels), composed=False).sum()
                 + prediction.free_nodes_ms + prediction.overhead_ms)


def kernel_check(device, model, predictions: dict, first: dict, rows: list[dict]) -> dict:
    """The zoo's own kernels measured alone (for scoring only: the predictor never sees them), beside a
    node chain for this process's fixed cost. On the reference block's scale, so the profile, the zoo
    and this check compare across processes: how far the predictor is from each kernel alone (its fit),
    and how far each network's kernels measured alone sum from it measured whole (composition)."""
    from latencykit.export import default_cache
    from latencykit.lut.kernels import CALL_CHAINS, call_costs, measure_kernels
    from latencykit.lut.protocol import REF_KEY, Protocol

    found = {(k["kernel"], json.dumps(k["config"], sort_keys=True)): k for p in predictions.values() for k in p.kernels}
    alone = model.predict_kernels(as_kernels(list(found.values())), composed=False)  # each alone, before composition
    unique = dict(zip(found, alone.tolist()))
    configs = [*CALL_CHAINS, *((kind, json.loads(c)) for kind, c in unique)]
    ms, ref = measure_kernels(device, configs, default_cache(), Protocol(rounds=5, seed=2))
    fixed, _ = call_costs(*ms[:2])
    alone = dict(zip(unique, ms[2:]))
    scale = model.info["reference_ms"]
    fit_err = {key: 100 * ((pred + model.overhead_ms) / scale / (alone[key] / ref) - 1) for key, pred in unique.items()}
    by_kind = {}
    for (kind, _), e in fit_err.items():
        by_kind.setdefault(kind, []).append(e)
    errs = np.abs(list(fit_err.values()))
    perfect = []
    for r in rows:
        p = predictions[r["model"]]
        own = np.array([alone[(k["kernel"], json.dumps(k["config"], sort_keys=True))] - fixed for k in p.kernels])
        summed = (own.sum() + fixed) / ref + p.free_nodes_ms / scale  # free nodes as the predictor has them
        whole = first[r["model"]] / first[REF_KEY]
        r["alone_vs_whole_pct"] = 100 * (summed / whole - 1)
        r["predicted_vs_alone_pct"] = 100 * (p.latency_ms / scale / summed - 1)
        # the composition applied to the kernels as measured alone (on the profile's scale): a perfect kernel fit
        composed = model.composition.apply(as_kernels(p.kernels), np.maximum(own, 0.0) * scale / ref)
        r["composed_alone_pct"] = 100 * ((np.maximum(composed, 0.0).sum() + p.free_nodes_ms + p.overhead_ms) / scale
                                         / whole - 1)
        perfect.append(r["composed_alone_pct"])
    perfect = np.array(perfect)
    centred = np.abs(perfect - np.median(perfect))
    return {"kernels": len(unique), "within_10": float((errs <= 10).mean() * 100),
            "within_25": float((errs <= 25).mean() * 100),
            "composed_alone": [float((np.abs(perfect) <= 5).mean() * 100), float((np.abs(perfect) <= 10).mean() * 100),
                               float(np.median(perfect)), float((centred <= 5).mean() * 100),
                               float((centred <= 10).mean() * 100)],
            "by_kind": {k: [len(v), *np.quantile(v, [0.1, 0.5, 0.9]).tolist()] for k, v in sorted(by_kind.items())}}


def profile_retest(name: str, model, onnx: dict, first: dict, second: dict, args) -> dict:
    """Profile the kernels again in a separate process (same seed, so the same first-half samples): how far each
    kernel type's samples moved, and the zoo score of a predictor built from the second profile."""
    from latencykit.lut.kernels import load_kernel_predictor, predict_model

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "second.json"
        subprocess.run([sys.executable, __file__, "--profile-pass", name, str(path), "--samples", str(args.samples),
                        "--rounds", str(args.rounds)], check=True, env=os.environ.copy())
        again = load_kernel_predictor(name, path)
        moved = {}
        for kind, rows in model.samples.items():
            before = {json.dumps(f, sort_keys=True): ms for f, ms in rows}
            ratios = [ms / before[key] for f, ms in again.samples.get(kind, [])
                      if (key := json.dumps(f, sort_keys=True)) in before and before[key] > 0]
            if ratios:
                moved[kind] = [len(ratios), *np.quantile(ratios, [0.1, 0.5, 0.9]).tolist()]
        err = np.abs([100 * (predict_model(onnx[v], name, predictor=again).latency_ms / ((first[v] + second[v]) / 2)
                             - 1) for v in onnx])
    return {"moved": moved, "within_5": float((err <= 5).mean() * 100), "within_10": float((err <= 10).mean() * 100),
            "mape": float(err.mean()), "overhead_ms": [model.overhead_ms, again.overhead_ms]}


def write(report: dict, out: Path) -> None:
    lines = ["# Bring your own model: kernel predictor on the held-out zoo", "",
             "The kernel predictor is trained on sampled kernels and on random networks measured whole "
             "(`profile --kernels`: its composition, latencykit.random_nets); the zoo "
             "(`latencykit.zoo`, 11 families) is never used to fit it. Each model is measured whole with the "
             "tables' whole-network protocol twice, in two processes; *retest* is the second pass against the first "
             "(noise floor). nn-Meter reports 99.0% within ±10% on its own phones with thousands of kernel samples: "
             "that is not the same work (other runtimes, devices, kernels and sample counts).", "",
             f"Command: `{report['command']}`  ",
             f"CPU: {report['cpu']}, {report['cores']} cores, 1 runtime thread, Python {report['python']}", ""]
    for name, d in report["devices"].items():
        lines += [f"## {name} ({d['runtime']})", "",
                  f"1-minute load average before and after measuring the zoo: "
                  f"{' / '.join(f'{x:.1f}' for x in d.get('load', []))}.", "",
                  f"Kernel profiling: {sum(d['kernel_samples'].values())} samples in {d['profile_s']:.0f} s "
                  f"({', '.join(f'{k} {n}' for k, n in d['kernel_samples'].items())}).", "",
                  "| | within ±5% | within ±10% | MAPE % |", "|---|---|---|---|",
                  f"| predicted vs measured | {d['within_5']:.0f}% | {d['within_10']:.0f}% | {d['mape']:.1f} |",
                  f"| retest (noise floor) | {d['retest_within_5']:.0f}% | {d['retest_within_10']:.0f}% | "
                  f"{d['retest_mape']:.1f} |"]
        if d.get("uncomposed_mape") is not None:
            lines.append(f"| without the composition (kernels alone summed) | {d['uncomposed_within_5']:.0f}% | "
                         f"{d['uncomposed_within_10']:.0f}% | {d['uncomposed_mape']:.1f} |")
        if d.get("ref_mape") is not None:
            lines.append(f"| predicted vs measured, both on the reference block's scale | {d['ref_within_5']:.0f}% | "
                         f"{d['ref_within_10']:.0f}% | {d['ref_mape']:.1f} |")
        lines.append("")
        if d.get("composition", {}).get("networks"):
            c = d["composition"]
            lines += [f"Composition fitted on {c['networks']} random networks: in-network time = scale x alone + "
                      "fixed, per group, plus ms per MiB of weights and of activations: "
                      + ", ".join(f"{g} {c['scale_' + g]:.2f} x + {c['fixed_us_' + g]:.1f} µs"
                                  for g in ("conv", "dwconv", "linear", "other"))
                      + f"; {c['weight_ms_per_mib'] * 1e3:.1f} µs per MiB of weights, "
                      f"{c['activation_ms_per_mib'] * 1e3:.1f} µs per MiB of activations.", ""]
        if d.get("kernel_check"):
            c = d["kernel_check"]
            lines += [f"Kernel check: the zoo's {c['kernels']} distinct kernels measured alone (scoring only), on the "
                      "reference block's scale. The predictor is within ±10% of a kernel alone for "
                      f"{c['within_10']:.0f}% of them and within ±25% for {c['within_25']:.0f}%; the model table's "
                      "*alone vs whole* column is how far a network's kernels measured alone sum from the network "
                      "measured whole (composition: no kernel predictor can do better), *predicted vs alone* the "
                      "predictor against that sum."]
            if c.get("composed_alone"):
                a5, a10, med, c5, c10 = c["composed_alone"]
                lines[-1] += (" The composition applied to the kernels as measured alone (what a perfect kernel fit "
                              f"would give; *composed alone* column) scores {a5:.0f}% / {a10:.0f}% within ±5 / ±10% on "
                              f"the reference block's scale, its median {med:+.1f}%; about that median, {c5:.0f}% / "
                              f"{c10:.0f}%.")
            lines += ["", "| kernel type | distinct in the zoo | predicted / alone - 1, %: 10% | median | 90% |",
                      "|---|---|---|---|---|"]
            lines += [f"| {k} | {n} | {a:+.0f} | {b:+.0f} | {e:+.0f} |" for k, (n, a, b, e) in c["by_kind"].items()]
            lines.append("")
        if d.get("profile_retest"):
            r = d["profile_retest"]
            lines += ["Kernel profiling retest: the same kernel samples profiled again in a second process, just after "
                      "the zoo was measured; a predictor fitted on that second profile scores "
                      f"{r['within_5']:.0f}% / {r['within_10']:.0f}% within ±5 / ±10% (MAPE {r['mape']:.1f}) on the same "
                      f"zoo readings. Fixed cost per inference: {r['overhead_ms'][0] * 1e3:.1f} then "
                      f"{r['overhead_ms'][1] * 1e3:.1f} µs.", "",
                      "| kernel type | samples in both | second / first: 10% | median | 90% |", "|---|---|---|---|---|"]
            lines += [f"| {k} | {n} | {a:.2f} | {b:.2f} | {c:.2f} |" for k, (n, a, b, c) in r["moved"].items()]
            lines.append("")
        extra = d.get("kernel_check") is not None
        lines += ["| model | measured ms | predicted ms | error % | without composition % | retest % |"
                  + (" alone vs whole % | predicted vs alone % | composed alone % |" if extra else ""),
                  "|---|---|---|---|---|---|" + ("---|---|---|" if extra else "")]
        lines += [f"| {r['model']} | {r['measured_ms']:.2f} | {r['predicted_ms']:.2f} | {r['error_pct']:+.1f} | "
                  f"{r.get('uncomposed_error_pct', float('nan')):+.1f} | {r['retest_pct']:+.1f} |"
                  + (f" {r['alone_vs_whole_pct']:+.1f} | {r['predicted_vs_alone_pct']:+.1f} | "
                     f"{r.get('composed_alone_pct', float('nan')):+.1f} |" if extra else "")
                  for r in d["rows"]]
        lines.append("")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
