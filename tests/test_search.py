"""Constrained search: its parts on a stand-in latency, then on a real host table of the tiny space: budgets,
optimum, bounds, CLI, export."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from conftest import TINY
from latencykit.arch import Arch
from latencykit.blocks import build
from latencykit.devices import get_device
from latencykit.errors import LatencykitError
from latencykit.export import ExportCache
from latencykit.lut.predictors import get_predictor
from latencykit.lut.profile import profile
from latencykit.lut.protocol import Protocol
from latencykit.lut.table import LatencyTable, default_path
from latencykit.nas.search import Budget, SearchConfig, search
from latencykit.nas.run import arch_changes, parse_count, parse_latency

FAST = Protocol(rounds=4, warmup_runs=2, min_runs=2, max_runs=10, burst_ms=1.0, extra_rounds=2)
SMALL = dict(population=12, generations=4, parents=4, coarse_samples=3000)


@pytest.fixture(scope="module")
def table(tmp_path_factory, tiny) -> LatencyTable:
    folder = tmp_path_factory.mktemp("search-table")
    return profile(tiny, get_device("host"), folder / "tiny.parquet", FAST, ExportCache(folder / "exports")).table


@pytest.fixture(scope="module")
def everything(tiny) -> np.ndarray:
    """Every architecture of the tiny space (it has a few hundred), as canonical gene rows."""
    rows = np.unique(tiny.sample_genes(50_000, 0), axis=0)
    assert len(rows) == tiny.size()
    return rows


def params_score(space):
    return lambda arch: float(space.params(arch))


# ----- the search's parts on a stand-in latency (no table: fast) ------------------------------------------

def flops_ms(space):
    """A stand-in predictor: 1 ms per MFLOP (exact and instant, so the tests below need no measurement)."""
    return lambda genes: space.evaluate(space.flops_values, np.atleast_2d(genes)) / 1e6


def test_budget_describes_its_bounds() -> None:
    assert Budget().describe() == "no budget"
    assert Budget(params=2e6).describe() == "params <= 2 M"
    full = Budget(latency_ms=12.5, params=2e6, flops=3e8)
    assert full.describe() == "latency <= 12.5 ms, params <= 2 M, FLOPs <= 300 M"


def test_constraints_count_table_evaluations_and_measure_budget_use(tiny) -> None:
    from latencykit.nas.search import Constraints

    c = Constraints(tiny, Budget(latency_ms=2.0, params=60.0), flops_ms(tiny))
    assert c.table_evaluations == 0
    c.metrics(tiny.sample_genes(5, 0))
    c.feasible(tiny.sample_genes(3, 1))
    assert c.table_evaluations == 8
    free = Constraints(tiny, Budget(params=60.0))
    free.metrics(tiny.sample_genes(5, 0))
    assert free.table_evaluations == 0  # no table, nothing looked up
    # the largest share of a bound any quantity takes; params alone where nothing is bounded
    m = {"latency_ms": np.array([1.0, 4.0]), "params": np.array([30.0, 6.0]), "flops": np.array([7.0, 9.0])}
    assert c.fullness(m).tolist() == [0.5, 2.0]
    assert Constraints(tiny, Budget()).fullness(m).tolist() == [30.0, 6.0]


def new_run(space, budget: Budget, latency=None, **config):
    from latencykit.nas.search import Constraints, _Search

    return _Search(space, Constraints(space, budget, latency), params_score(space), SearchConfig(**config), "-")


def test_few_feasible_skeletons_are_filled_with_distinct_feasible_mutants(tiny) -> None:
    budget = Budget(params=80_000)
    for seed in range(5):
        run = new_run(tiny, budget, population=12, generations=0, parents=4, coarse_samples=3, seed=seed)
        rows, m = run.coarse()
        assert len(rows) == 12 and len(np.unique(rows, axis=0)) == 12  # none a copy of another (or of its parent)
        assert (m["params"] <= budget.params).all()
        assert m["params"].tolist() == tiny.evaluate(tiny.params_values, rows).tolist()


def test_skeletons_come_in_rank_order_or_drawn_from_the_top_share(tiny) -> None:
    budget = Budget(flops=float(np.median(tiny.evaluate(tiny.flops_values, tiny.sample_genes(500, 0)))))
    run = new_run(tiny, budget, population=12, coarse_samples=500, seed=1)
    rows, m = run.coarse()
    full = run.c.fullness(m)
    assert (np.diff(full) <= 0).all()  # the fullest first: skeleton i is parent-ranked i
    every = new_run(tiny, budget, population=12, coarse_samples=500, seed=1)
    feasible, fm = every._new_feasible(tiny.sample_genes(500, every.rng))
    ranked = np.sort(every.c.fullness(fm))[::-1]
    assert full.tolist() == ranked[:12].tolist()
    # a pool of the whole feasible draw: 12 of them at random, not the 12 fullest
    def skeletons(seed: int, pool: float) -> list[float]:
        _, m = new_run(tiny, budget, population=12, coarse_samples=500, skeleton_pool=pool, seed=seed).coarse()
        assert (m["flops"] <= budget.flops).all()
        return sorted(m["flops"].tolist())

    assert any(skeletons(s, 1.0) != skeletons(s, 0.0) for s in range(3))
    # a pool of the fullest 20%: 12 distinct skeletons, each at least as full as the pool's last one
    for seed in range(5):
        run = new_run(tiny, budget, population=12, coarse_samples=500, skeleton_pool=0.2, seed=seed)
        rows, m = run.coarse()
        check = new_run(tiny, budget, population=12, coarse_samples=500, seed=seed)
        fm = check._new_feasible(tiny.sample_genes(500, check.rng))[1]
        share = np.sort(check.c.fullness(fm))[::-1][: max(12, int(len(fm["flops"]) * 0.2))]
        assert len(np.unique(rows, axis=0)) == 12 and (run.c.fullness(m) >= share[-1]).all(), seed


def test_random_feasible_draws_until_it_has_enough(tiny) -> None:
    loose = Budget(latency_ms=1e9)
    first = new_run(tiny, loose, flops_ms(tiny), seed=2).random_feasible(1, 20)[0]  # one batch of 20 has enough
    assert 0 < len(first) <= 20
    run = new_run(tiny, loose, flops_ms(tiny), seed=2)
    rows, _ = run.random_feasible(len(first), 20)  # exactly what the first batch gives: no second batch
    assert rows.tolist() == first.tolist() and run.c.table_evaluations == 20
    run = new_run(tiny, loose, flops_ms(tiny), seed=2)
    rows, m = run.random_feasible(50, 20)  # more than a batch: it draws on, and stops once it has them
    assert 50 <= len(rows) < 70 and run.c.table_evaluations < 20 * run.config.tries
    assert len(np.unique(rows, axis=0)) == len(rows) and m["latency_ms"].tolist() == flops_ms(tiny)(rows).tolist()
    assert not run.seen  # what it found is not yet evaluated


def test_children_are_new_feasible_crossovers_and_mutants(tiny) -> None:
    loose = Budget(params=1e9)
    rows = tiny.sample_genes(200, 7)
    varied = tiny.cardinality > 1
    a, b = next((r, s) for r in rows for s in rows if 2 <= ((r != s) & varied).sum() <= 4)
    parents = np.stack([a, b])
    run = new_run(tiny, loose, crossover=1.0, seed=0)
    run.seen.update(p.tobytes() for p in parents)  # evaluated already, as in `evolve`
    kids, m = run.children(parents, 2, 0.2, 0.4)
    # crossover only: each gene from one parent or the other, and no kid a parent
    assert len(kids) == 2 and ((kids == a) | (kids == b)).all()
    assert not any((k == p).all() for k in kids for p in parents) and len(np.unique(kids, axis=0)) == 2
    assert m["params"].tolist() == tiny.evaluate(tiny.params_values, kids).tolist()
    assert len(run.seen) == 2  # the kids are not evaluated yet
    # one parent: nothing to cross, every kid is a mutant
    run = new_run(tiny, loose, crossover=1.0, seed=0)
    run.seen.add(a.tobytes())
    kids, _ = run.children(a[None], 6, 0.2, 0.4)
    assert len(kids) == 6 and len(np.unique(kids, axis=0)) == 6 and not (kids == a).all(axis=1).any()


def test_mutation_redraws_genes_with_their_probability(tiny) -> None:
    run = new_run(tiny, Budget())
    parent = tiny.sample_genes(1, 3)
    depth = run.depth_genes
    varied = tiny.cardinality > 1
    out = run.mutate(parent, 50, 0.0, 1.0)  # every layer gene re-drawn, no depth
    assert (out[:, depth] == parent[0, depth]).all()
    assert (out[:, ~depth & varied] != parent[0, ~depth & varied]).all()  # a re-drawn gene takes another value
    assert (out[:, ~varied] == 0).all() and (out < tiny.cardinality).all()
    out = run.mutate(parent, 50, 1.0, 0.0)  # the other way round
    assert (out[:, depth & varied] != parent[0, depth & varied]).all() and (out[:, ~depth] == parent[0, ~depth]).all()


def test_uniform_crossover_draws_both_parents_from_all_and_mixes_genes_evenly(tiny) -> None:
    """Parents made of one value each (0, 1, 2): every parent is drawn as often as first or second
    parent (each value a third of all genes; the best parent is not left out), and a child of two
    different parents takes each gene from either with probability 1/2 (its majority parent gives about
    0.59 of 20 genes, not the 0.75+ of a lopsided mix)."""
    run = new_run(tiny, Budget(), seed=0)
    genes = 20
    parents = np.repeat(np.arange(3)[:, None], genes, axis=1)
    kids = run.crossover(parents, 600)
    shares = np.bincount(kids.ravel(), minlength=3) / kids.size
    assert np.allclose(shares, 1 / 3, atol=0.04), shares
    mixed = [k for k in kids if len(np.unique(k)) == 2]
    majority = np.mean([np.bincount(k).max() / genes for k in mixed])
    assert len(mixed) > 300 and 0.55 < majority < 0.65, majority


def test_children_draw_batch_after_batch_until_there_are_enough(tiny) -> None:
    run = new_run(tiny, Budget(latency_ms=1e9), flops_ms(tiny), crossover=0.0, seed=0)
    parent = tiny.sample_genes(1, 0)
    run.seen.add(parent[0].tobytes())
    kids, m = run.children(parent, 30, 0.05, 0.05)  # rare mutations: one batch of 4 x 30 + 8 has too few new
    assert len(kids) == 30 and len(np.unique(kids, axis=0)) == 30 and run.c.table_evaluations > 4 * 30 + 8
    assert m["latency_ms"].tolist() == flops_ms(tiny)(kids).tolist()


def test_search_does_not_need_the_smallest_subnet_to_be_feasible(tiny, everything) -> None:
    """A device where bigger is faster (the smallest subnet is the slowest): every method still searches."""
    top = float(tiny.evaluate(tiny.flops_values, everything).max()) / 1e6
    latency = lambda genes: top + 1 - flops_ms(tiny)(genes)  # noqa: E731
    budget = Budget(latency_ms=float(np.median(latency(everything))))
    assert latency(np.zeros((1, len(tiny.genes)), dtype=np.int64))[0] > budget.latency_ms
    for method in ("coarse-to-fine", "evolution", "random"):
        r = search(tiny, params_score(tiny), budget, latency, SearchConfig(method=method, **SMALL))
        assert 40 <= r.accuracy_evaluations <= 60 and all(c.latency_ms <= budget.latency_ms for c in r.evaluated)


@pytest.mark.timeout(60)  # a search that does not stop fails here, not at the suite's end
def test_a_search_evaluates_every_feasible_subnet_once_then_stops(tiny, everything) -> None:
    """Fewer feasible subnets than evaluations: each is evaluated once, then three generations find
    nothing new and the search ends (each of them a bounded number of lookups)."""
    latency = flops_ms(tiny)
    ms = latency(everything)
    budget = Budget(latency_ms=float(np.sort(ms)[9]))
    feasible = {tiny.decode(g) for g in everything[ms <= budget.latency_ms]}
    assert 10 <= len(feasible) < 12
    r = search(tiny, params_score(tiny), budget, latency, SearchConfig(**SMALL))
    assert {c.arch for c in r.evaluated} == feasible and r.accuracy_evaluations == len(feasible)
    # every later generation stalls: three of them, each drawing `tries` batches of both kinds of child
    probe = new_run(tiny, budget, latency, **SMALL)
    rows = np.stack([tiny.encode(a) for a in feasible])
    probe.seen.update(r.tobytes() for r in rows)
    probe.children(rows, SMALL["population"], 0.2, 0.4)
    stalled = probe.c.table_evaluations
    assert r.stages[-1].name == "evolution" and r.stages[-1].accuracy_evaluations == 0
    assert r.stages[-1].table_evaluations == 3 * stalled


def test_the_evolution_stops_after_max_stalls_generations_in_a_row_find_nothing(tiny, everything, monkeypatch) -> None:
    """The stall count restarts whenever a generation finds something: the run ends with exactly
    MAX_STALLS empty generations after the last one that found children."""
    from latencykit.nas.search import MAX_STALLS, _Search

    latency = flops_ms(tiny)
    budget = Budget(latency_ms=float(np.sort(latency(everything))[29]))
    found: list[int] = []
    children = _Search.children

    def counted(self, parents, n, p_depth, p_layer):
        rows, m = children(self, parents, n, p_depth, p_layer)
        found.append(len(rows))
        return rows, m

    monkeypatch.setattr(_Search, "children", counted)
    r = search(tiny, params_score(tiny), budget, latency, SearchConfig(**{**SMALL, "population": 6, "generations": 50}))
    assert r.accuracy_evaluations == 30 and sum(found) == 30 - 6  # the skeletons, then every other one
    assert found[-MAX_STALLS:] == [0] * MAX_STALLS and found[-MAX_STALLS - 1] > 0


def test_generations_bound_the_evolution(tiny) -> None:
    def run(**config) -> list[str]:
        r = search(tiny, params_score(tiny), Budget(params=1e9), None,
                   SearchConfig(**{"population": 2, "parents": 2, "generations": 0, "crossover": 0.0,
                                   "coarse_samples": 200, **config}))
        return [c.stage for c in r.evaluated]

    stages = run(population=4, crossover=0.5, generations=3)
    assert stages[:4] == ["skeletons"] * 4 and stages[-1] == "generation 3" and len(stages) < 16  # some found fewer
    # an explicit evaluation count runs on past `generations` (baselines at equal evaluations), to 10x + 10
    stages = run(evaluations=100)
    assert len(stages) == 22 and stages[-1] == "generation 10"
    stages = run(generations=1, evaluations=100)
    assert len(stages) == 42 and stages[-1] == "generation 20"
    assert len(run(evaluations=7)) == 7  # or until the count is spent


def test_each_method_runs_its_own_stages(tiny) -> None:
    budget = Budget(params=80_000)
    stages = {"coarse-to-fine": ["coarse", "skeletons", "evolution"],
              "evolution": ["initial population", "random seeds", "evolution"], "random": ["random"]}
    for method, names in stages.items():
        start = time.perf_counter()
        r = search(tiny, params_score(tiny), budget, None, SearchConfig(method=method, **SMALL))
        assert 0 <= sum(s.seconds for s in r.stages) <= time.perf_counter() - start
        assert [s.name for s in r.stages] == names and r.method == method
        assert 0 < r.accuracy_evaluations == sum(s.accuracy_evaluations for s in r.stages) <= 60
        first = names[-2] if method != "random" else "random"  # the stage that evaluates the first subnets
        kept = {s.name: s.kept for s in r.stages}[first]
        assert [c.stage for c in r.evaluated if not c.stage.startswith("generation")] == [first] * kept
        if method != "random":  # the evolution stage keeps what its generations evaluated
            bred = sum(c.stage.startswith("generation") for c in r.evaluated)
            assert {s.name: s.kept for s in r.stages}["evolution"] == bred > 0


def test_search_config_refuses_empty_runs_and_unknown_names() -> None:
    SearchConfig(parents=1, population=1, generations=0)  # the least there is
    for bad in ({"parents": 0}, {"population": 0}, {"generations": -1}):
        with pytest.raises(LatencykitError, match="population >= 1, parents >= 1 and generations >= 0"):
            SearchConfig(**bad)
    with pytest.raises(LatencykitError, match="unknown search method 'annealing'"):
        SearchConfig(method="annealing")
    assert SearchConfig(population=5, generations=3).max_evaluations == 20
    assert SearchConfig(population=5, generations=3, evaluations=7).max_evaluations == 7


def test_the_front_trades_score_against_latency_when_there_is_a_table(tiny) -> None:
    latency = lambda genes: tiny.evaluate(tiny.params_values, np.atleast_2d(genes)) / 1e4  # noqa: E731 (not FLOPs)
    score = lambda arch: float(tiny.flops(arch) // 200_000)  # coarse: ties in score  # noqa: E731
    r = search(tiny, score, Budget(latency_ms=8.0), latency, SearchConfig(**SMALL))
    assert len({c.score for c in r.evaluated}) < len(r.evaluated)

    def dominated(c) -> bool:
        return any((o.latency_ms <= c.latency_ms and o.score > c.score)
                   or (o.latency_ms < c.latency_ms and o.score >= c.score) for o in r.evaluated)

    front = [(c.latency_ms, c.score) for c in r.pareto()]
    assert front == sorted({(c.latency_ms, c.score) for c in r.evaluated if not dominated(c)})
    assert [c.to_dict() for c in r.pareto()] == r.to_dict()["pareto"]


def test_a_budget_only_the_smallest_subnet_meets_is_met_by_every_method() -> None:
    """In a real-sized space random draws never hit the smallest subnet: the search must still find it."""
    from latencykit.space import load_space

    space = load_space("autovit-xxs")
    smallest = space.smallest()
    budget = Budget(params=space.params(smallest))
    for method in ("coarse-to-fine", "evolution", "random"):
        r = search(space, params_score(space), budget, None,
                   SearchConfig(method=method, population=4, generations=1, coarse_samples=500, tries=2))
        assert r.best.arch == smallest and [c.arch for c in r.evaluated] == [smallest]
        with pytest.raises(LatencykitError, match="no architecture meets params <= 1 M: the smallest params are"):
            search(space, params_score(space), Budget(params=1e6), None,
                   SearchConfig(method=method, population=4, generations=1, coarse_samples=500, tries=2))


# ----- on a measured table ----------------------------------------------------------------------------------

def test_every_evaluated_subnet_meets_both_budgets(tiny, table) -> None:
    pred = get_predictor("isolated").fit(tiny, table)
    lat = pred.predict_genes(tiny.sample_genes(2000, 1))
    budget = Budget(latency_ms=float(np.median(lat)), params=60_000)
    for method in ("coarse-to-fine", "evolution", "random"):
        r = search(tiny, params_score(tiny), budget, pred.predict_genes, SearchConfig(method=method, **SMALL))
        assert r.evaluated and r.accuracy_evaluations <= 12 * 5
        for c in r.evaluated:
            assert pred.predict(c.arch) == pytest.approx(c.latency_ms) and c.latency_ms <= budget.latency_ms
            assert tiny.params(c.arch) == c.params <= budget.params and tiny.flops(c.arch) == c.flops
        assert len({c.arch for c in r.evaluated}) == len(r.evaluated)  # each subnet evaluated once


def test_coarse_to_fine_finds_the_brute_force_optimum(tiny, table, everything) -> None:
    """With params as the signal the best feasible subnet is known exactly; the search must reach it."""
    pred = get_predictor("isolated").fit(tiny, table)
    lat = pred.predict_genes(everything)
    budget = Budget(latency_ms=float(np.quantile(lat, 0.4)), params=80_000)
    params = tiny.evaluate(tiny.params_values, everything)
    ok = (lat <= budget.latency_ms) & (params <= budget.params)
    r = search(tiny, params_score(tiny), budget, pred.predict_genes, SearchConfig(**SMALL))
    # 60 evaluations out of a few hundred feasible subnets: the search must end among the very best
    # (the table is measured afresh each run, so which subnet is exactly best varies)
    top = np.unique(params[ok])[-3:]
    assert r.best.params >= top[0], (r.best.params, top)
    names = [s.name for s in r.stages]
    assert names == ["coarse", "skeletons", "evolution"]
    coarse = r.stages[0]
    assert coarse.accuracy_evaluations == 0 and coarse.table_evaluations >= SMALL["coarse_samples"]
    assert r.stages[1].accuracy_evaluations == coarse.kept == SMALL["population"]


def test_searches_are_deterministic_and_baselines_take_the_same_evaluations(tiny, table) -> None:
    pred = get_predictor("isolated").fit(tiny, table)
    budget = Budget(latency_ms=float(np.median(pred.predict_genes(tiny.sample_genes(500, 2)))))
    a = search(tiny, params_score(tiny), budget, pred.predict_genes, SearchConfig(seed=3, **SMALL))
    b = search(tiny, params_score(tiny), budget, pred.predict_genes, SearchConfig(seed=3, **SMALL))
    assert [c.arch for c in a.evaluated] == [c.arch for c in b.evaluated]
    n = a.accuracy_evaluations
    for method in ("evolution", "random"):
        r = search(tiny, params_score(tiny), budget, pred.predict_genes,
                   SearchConfig(method=method, evaluations=n, seed=3, **SMALL))
        assert r.accuracy_evaluations == n


def test_infeasible_budget_names_the_floor_and_returns_at_once(tiny, table) -> None:
    pred = get_predictor("isolated").fit(tiny, table)
    floor = float(pred.predict_genes(np.zeros(len(tiny.genes), dtype=np.int64))[0])
    start = time.perf_counter()
    with pytest.raises(LatencykitError, match=r"smallest latency tiny reaches on host is") as err:
        search(tiny, params_score(tiny), Budget(latency_ms=floor * 0.5), pred.predict_genes, SearchConfig(),
               device="host")
    shown = re.search(r"reaches on host is ([0-9.e+-]+) ms", str(err.value))  # rounded for reading
    assert shown and float(shown.group(1)) == pytest.approx(floor, rel=0.05), str(err.value)
    assert str(err.value).split(": ", 1)[1].startswith("the smallest latency")  # the bound that failed first
    with pytest.raises(LatencykitError, match=r"smallest params are 0.0117 M") as err:
        search(tiny, params_score(tiny), Budget(params=1000), None, SearchConfig(), device="host")
    least = float(np.min(tiny.evaluate(tiny.flops_values, np.zeros((1, len(tiny.genes)), dtype=np.int64))))
    assert f"the smallest FLOPs {least / 1e6:.4g} M" in str(err.value)
    assert time.perf_counter() - start < 10
    with pytest.raises(LatencykitError, match="needs a latency table"):
        search(tiny, params_score(tiny), Budget(latency_ms=1.0), None)


def test_flops_budget_without_a_table(tiny, everything) -> None:
    flops = tiny.evaluate(tiny.flops_values, everything)
    limit = float(np.median(flops))
    r = search(tiny, params_score(tiny), Budget(flops=limit), None, SearchConfig(**SMALL))
    assert all(c.flops <= limit for c in r.evaluated) and np.isnan(r.best.latency_ms)
    # the front against a brute-force one: a candidate is on it iff no other has FLOPs <= and a score >,
    # or FLOPs < and a score >= (ties in both keep the first)
    def dominated(c) -> bool:
        return any((o.flops <= c.flops and o.score > c.score) or (o.flops < c.flops and o.score >= c.score)
                   for o in r.evaluated)

    brute = sorted({(c.flops, c.score) for c in r.evaluated if not dominated(c)})
    assert [(c.flops, c.score) for c in r.pareto()] == brute
    assert r.best.score == max(c.score for c in r.evaluated)


def test_units_and_arch_changes(tiny) -> None:
    assert parse_latency("30ms") == 30 and parse_latency("0.5s") == 500 and parse_latency("12") == 12
    assert parse_count("6M", "params") == 6e6 and parse_count("600k", "params") == 6e5
    with pytest.raises(LatencykitError, match="cannot read latency"):
        parse_latency("fast")
    cols, rows = arch_changes({"a": tiny.smallest(), "b": tiny.largest()})
    assert cols == ["choice", "a", "b"]
    changed = {r[0].strip("* ").strip() for r in rows if r[0].startswith("*")}
    assert "stage1.width" in changed and "resolution" not in changed


# ----- the command line ---------------------------------------------------------------------------------

def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "latencykit", *args], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=300)


def slow_transformer_table(table: LatencyTable, device: str) -> LatencyTable:
    """The same table as if measured where transformer blocks cost 2x and the rest half (a stand-in phone,
    whose whole subnets nobody measured: no calibration set)."""
    rows = table.rows.copy()
    heavy = rows["kind"].isin(["transformer", "mvit_local", "mvit_fusion"])
    rows.loc[heavy, "latency_ms"] *= 2
    rows.loc[~heavy, "latency_ms"] *= 0.5
    return LatencyTable(replace(table.meta, device=device, calibration={}), rows.reset_index(drop=True))


def test_search_command_per_device_measures_on_host_and_exports(tiny, table, home, tmp_path) -> None:
    table.write(default_path("host", "tiny"))
    phone_table = slow_transformer_table(table, "phone-a")
    phone_table.write(default_path("phone-a", "tiny"))
    budget = max(float(np.median(get_predictor("isolated").fit(tiny, t).predict_genes(tiny.sample_genes(500, 0))))
                 for t in (table, phone_table))
    out = cli("search", "--space", TINY, "-d", "host", "-d", "phone-a", "--latency", f"{budget:.4f}ms",
              "--params", "0.1M", "--proxy", "params", "--population", "12", "--generations", "4",
              "--coarse-samples", "3000", "--out", str(tmp_path), "--json")
    assert out.returncode == 0, out.stderr
    host, phone = json.loads(out.stdout)
    assert host["device"] == "host" and host["latency"] == "predicted"
    assert host["measured"]["status"] == "measured" and host["measured"]["latency_ms"] > 0
    assert phone["measured"]["status"].startswith("not measured")
    for r in (host, phone):
        assert r["best"]["params"] <= 1e5 and r["best"]["latency_ms"] <= budget
        assert Path(r["files"]["arch"]).exists() and Path(r["files"]["pareto_plot"]).stat().st_size > 1000
    # each device's choice is priced by its own table (the phone's, not the host's)
    phone_arch = Arch.from_dict(phone["best"]["arch"])
    assert phone["best"]["latency_ms"] == pytest.approx(get_predictor("isolated").fit(tiny, phone_table).predict(phone_arch))
    assert phone["best"]["latency_ms"] != pytest.approx(get_predictor("isolated").fit(tiny, table).predict(phone_arch))
    # host's table carries whole subnets measured with it: its predictor's held-out error sets a margin,
    # and the choice fits the budget less that margin; the stand-in phone's error is unknown: no margin
    hc, pc = host["config"], phone["config"]
    assert hc["predictor"].startswith("calibrated(n=") and hc["expected_error_pct"] > 0
    assert hc["margin_pct"] == pytest.approx(1.645 * hc["expected_error_pct"], abs=0.01)
    assert host["best"]["latency_ms"] <= hc["searched_within_ms"] < budget
    assert pc["predictor"] == "isolated" and pc["expected_error_pct"] is None and pc["margin_pct"] == 0
    onnx_path = tmp_path / "host.onnx"
    exp = cli("export", host["files"]["arch"], "--space", TINY, "--format", "onnx", "--out", str(onnx_path), "--json")
    assert exp.returncode == 0, exp.stderr
    arch = Arch.load(host["files"]["arch"])
    torch.manual_seed(0)
    net = build(tiny.layers(arch))
    x = torch.randn(1, 3, arch.resolution, arch.resolution)
    got = ort.InferenceSession(str(onnx_path)).run(None, {"input0": x.numpy()})[0]
    np.testing.assert_allclose(got, net(x).detach().numpy(), rtol=1e-3, atol=1e-4)
    assert "random initialisation" in json.loads(exp.stdout)["weights"]


def test_latency_budget_without_a_table_says_how_to_build_one(home) -> None:
    out = cli("search", "--space", TINY, "-d", "pixel4", "--latency", "30ms", "--proxy", "params")
    assert out.returncode == 2 and "latencykit profile --device pixel4" in out.stderr
    assert "lut import" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_learned_latency_predictors_plug_in(tiny, table, home) -> None:
    from latencykit.lut.predictors import resolve_predictor
    from latencykit.lut.table import default_path

    layer = resolve_predictor("layer", tiny, table, default_path("host", tiny.name))
    assert layer.label == "layer"
    budget = Budget(latency_ms=float(np.median(layer.predict_genes(tiny.sample_genes(500, 0)))))
    r = search(tiny, params_score(tiny), budget, layer.predict_genes, SearchConfig(**SMALL))
    # the budget is a median of the same predictions, so ties at the budget are likely: allow the rounding of a
    # per-architecture sum against the vectorised one
    assert all(layer.predict(c.arch) <= budget.latency_ms * (1 + 1e-9) for c in r.evaluated)
    # the table's own calibration subnets make `calibrated` (and so `auto`) available without `fit`
    n = len(table.calibration_set(tiny)[0])
    assert resolve_predictor("auto", tiny, table, default_path("host", tiny.name)).label == f"calibrated(n={n})"
    bare = LatencyTable(replace(table.meta, calibration={}), table.rows.reset_index(drop=True))
    assert resolve_predictor("auto", tiny, bare, default_path("host", tiny.name)).label == "isolated"
    with pytest.raises(LatencykitError, match="needs whole-model measurements.*latencykit fit --predictor calibrated"):
        resolve_predictor("calibrated", tiny, bare, default_path("host", tiny.name))


def test_supernet_accuracy_guides_search_and_export_inherits_its_weights(tiny, table, tmp_path) -> None:
    from latencykit.nas.proxies import get_signal
    from latencykit.nas.run import export_arch
    from latencykit.nas.train import TrainConfig, train_supernet, supernet_from_checkpoint

    train_supernet(TrainConfig(space=TINY, out=str(tmp_path / "run"), sampler="uniform", epochs=1, batch=16, max_steps=2,
                    calib_batches=1, checkpoint_every=1, threads=1))
    ckpt = str(tmp_path / "run" / "checkpoint.pt")
    signal = get_signal("supernet", tiny, checkpoint=ckpt)
    assert signal.kind == "accuracy"
    pred = get_predictor("isolated").fit(tiny, table)
    budget = Budget(latency_ms=float(np.median(pred.predict_genes(tiny.sample_genes(500, 0)))))
    r = search(tiny, signal.score, budget, pred.predict_genes,
               SearchConfig(population=4, generations=1, parents=2, coarse_samples=500), signal="supernet",
               signal_kind="accuracy")
    assert 0 <= r.best.score <= 1 and r.best.score == max(c.score for c in r.evaluated)
    assert signal.score(r.best.arch) == r.best.score  # BN recalibration is deterministic
    out = export_arch(tiny, r.best.arch, "onnx", tmp_path / "best.onnx", ckpt)
    assert out["weights"].startswith("inherited")
    supernet, _ = supernet_from_checkpoint(ckpt)
    x = torch.randn(1, 3, r.best.arch.resolution, r.best.arch.resolution)
    want = supernet.extract(r.best.arch).eval()(x).detach().numpy()
    got = ort.InferenceSession(out["path"]).run(None, {"input0": x.numpy()})[0]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def test_score_cache_persists_and_keys_on_space_settings_and_weights(tiny, tmp_path) -> None:
    from latencykit.nas.proxies import get_signal
    from latencykit.nas.scores import ScoreCache, Scorer
    from latencykit.space import SearchSpace

    archs = [tiny.decode(g) for g in np.unique(tiny.sample_genes(40, 3), axis=0)[:3]]
    cache = ScoreCache(tmp_path / "scores.sqlite")
    assert not cache.path.exists() and cache.count() == 0  # nothing written before there is a score
    first = Scorer(tiny, get_signal("ntk", tiny), cache)
    values = first.many(archs)
    assert first.computed == 3 and first.hits == 0 and cache.count() == 3
    again = Scorer(tiny, get_signal("ntk", tiny), ScoreCache(cache.path))  # a later run: a fresh process' view
    assert again.many(archs) == values and again.computed == 0 and again.hits == 3
    for other in (Scorer(tiny, get_signal("ntk", tiny, seed=1), cache),  # other weights
                  Scorer(tiny, get_signal("vintk", tiny), cache),  # another proxy
                  Scorer(SearchSpace.from_dict({**json.loads(Path(TINY).read_text()), "name": "tiny"}
                                               | {"act": "relu"}), get_signal("ntk", tiny), cache)):  # other space
        other.many(archs[:1])
        assert other.computed == 1 and other.hits == 0
    params = Scorer(tiny, get_signal("params", tiny), cache)  # cheaper than a lookup: never cached
    assert params.many(archs) == [float(tiny.params(a)) for a in archs] and params.cache is None


def test_threaded_scoring_matches_one_thread(tiny) -> None:
    from latencykit.nas.proxies import get_signal
    from latencykit.nas.scores import Scorer

    archs = [tiny.decode(g) for g in np.unique(tiny.sample_genes(60, 5), axis=0)[:6]]
    one = Scorer(tiny, get_signal("vintk", tiny)).many(archs)
    threads = torch.get_num_threads()
    assert Scorer(tiny, get_signal("vintk", tiny), threads=3).many(archs) == one  # seeded weights, same scores
    assert torch.get_num_threads() == threads


def test_multi_device_search_scores_each_subnet_once_and_reuses_scores(tiny, table, home, tmp_path) -> None:
    table.write(default_path("host", "tiny"))
    slow_transformer_table(table, "phone-a").write(default_path("phone-a", "tiny"))
    from latencykit.api import predictor_for

    # on the scale the search predicts host with (its best predictor: calibrated on the table's whole subnets,
    # 1.2-1.6x the isolated sum on a 32 MiB-L3 CPU, where an isolated median fell below host's fastest subnet)
    budget = float(np.median(predictor_for("host", tiny).predict_genes(tiny.sample_genes(500, 0))))
    args = ("search", "--space", TINY, "-d", "host", "-d", "phone-a", "--latency", f"{budget:.4f}ms",
            "--proxy", "ntk", "--population", "6", "--generations", "2", "--coarse-samples", "2000",
            "--no-measure", "--out", str(tmp_path))
    cold = cli(*args, "--json")
    assert cold.returncode == 0, cold.stderr
    runs = json.loads(cold.stdout)
    distinct = {json.dumps(c["arch"], sort_keys=True) for r in runs for c in json.loads(
        Path(r["files"]["result"]).read_text())["pareto"]}
    computed = sum(r["config"]["scores"]["computed"] for r in runs)
    evaluated = sum(r["accuracy_evaluations"] for r in runs)
    assert computed <= evaluated and len(distinct) <= computed  # an arch found twice was scored once
    assert (home / "scores.sqlite").exists()
    warm = cli(*args)  # the same search again, as people read it: every score from the cache
    assert warm.returncode == 0, warm.stderr
    lines = warm.stdout.splitlines()
    summary = [l for l in lines if l.startswith(("host:", "phone-a:"))]
    assert len(summary) == 2 and all(len(l) <= 100 for l in summary), summary
    assert all(re.search(r"; [1-9][0-9]* scored \([1-9][0-9]* cached\)", l) for l in summary), summary
    assert max(len(l) for l in lines) > 80  # off a terminal the tables are as wide as their content


def test_each_device_keeps_the_best_subnet_scored_for_any_device_within_its_budget(tiny, table) -> None:
    from latencykit.nas.run import share_scores
    from latencykit.nas.search import Constraints

    phone = slow_transformer_table(table, "phone-a")
    predictors = {d: get_predictor("isolated").fit(tiny, t) for d, t in (("host", table), ("phone-a", phone))}
    genes = tiny.sample_genes(500, 0)
    budget = Budget(latency_ms=float(np.median(predictors["host"].predict_genes(genes))))
    results = [search(tiny, params_score(tiny), budget, p.predict_genes, SearchConfig(**{**SMALL, "generations": 1}),
                      d) for d, p in predictors.items()]
    share_scores(tiny, results, {d: p.predict_genes for d, p in predictors.items()})
    pool = {c.arch: c.score for r in results for c in r.evaluated}
    for r in results:
        c = Constraints(tiny, budget, predictors[r.device].predict_genes)
        ok, _ = c.feasible(np.stack([tiny.encode(a) for a in pool]))
        assert r.best.score == max(s for s, k in zip(pool.values(), ok) if k)
        assert predictors[r.device].predict(r.best.arch) <= budget.latency_ms
        assert r.stages[-1].name == "shared"


def test_skeletons_are_ranked_as_configured(tiny, table) -> None:
    from latencykit.nas.search import Constraints, _Search

    pred = get_predictor("isolated").fit(tiny, table)
    budget = Budget(latency_ms=float(np.quantile(pred.predict_genes(tiny.sample_genes(2000, 1)), 0.5)))
    for rank in ("fullness", "params", "flops"):
        cfg = SearchConfig(skeleton_rank=rank, seed=4, **SMALL)
        run = _Search(tiny, Constraints(tiny, budget, pred.predict_genes), params_score(tiny), cfg, "host")
        rows, m = run.coarse()
        # the same draw, every feasible row: the skeletons are its top `population` by the ranking
        again = _Search(tiny, Constraints(tiny, budget, pred.predict_genes), params_score(tiny), cfg, "host")
        allrows, am = again._new_feasible(tiny.sample_genes(cfg.coarse_samples, again.rng))
        key = again.c.fullness(am) if rank == "fullness" else am[rank]
        got = run.c.fullness(m) if rank == "fullness" else m[rank]
        assert np.allclose(np.sort(got)[::-1], np.sort(key)[::-1][: cfg.population])
    with pytest.raises(LatencykitError, match="unknown skeleton ranking 'accuracy'"):
        SearchConfig(skeleton_rank="accuracy")
