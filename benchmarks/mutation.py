"""Mutation check: do the tests notice when the code is broken? (issue 17)

For each module, every mutation site found in its syntax tree is changed one at a time: comparison
operators (< <=, > >=, == !=, in / not in, is / is not), arithmetic operators (+ -, * /, // *, ** *),
`and` / `or`, a removed `not`, numeric constants in function bodies (n -> n + 1, 0.5 -> 0.75,
True / False), and each `if` / `while` condition negated. Settings (module constants, dataclass
defaults, default arguments) are tuning, not logic: they are not mutated. The module's tests run against each mutant (`pytest -x`, stopped
after `--timeout` seconds, a timeout counts as killed); a mutant they pass survives. Docstrings,
type annotations and logging-only lines are not mutated. Run it from a scratch checkout: it rewrites
the module files while it runs and restores them after each mutant.

Run: python benchmarks/mutation.py [--module PATH=TEST[,TEST...]]... [--timeout 120] [--only 3,7,10-12]
     [--log FILE.jsonl]
(`--only`: those mutants alone, numbered as the run prints them, e.g. to re-check survivors.)
`--log`: one JSON line per mutant (digest of the module's code, number, line, mutation, verdict, the first
failing test); a run given the same log skips the mutants it already holds for the same code (docstrings and
comments may change), so an interrupted run resumes. Writes benchmarks/results/mutation.md (or --out PATH).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODULES = {
    "latencykit/lut/protocol.py": ["tests/test_protocol.py", "tests/test_scripted_tables.py", "tests/test_profile.py"],
    "latencykit/lut/validate.py": ["tests/test_scripted_tables.py", "tests/test_profile.py"],
    "latencykit/lut/predictors.py": ["tests/test_predictors.py", "tests/test_scripted_tables.py",
                                     "tests/test_calibration.py", "tests/test_cli_paths.py"],
    "latencykit/nas/search.py": ["tests/test_search.py"],
}
SWAPS: dict[type, type] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
    ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult,
    ast.Pow: ast.Mult, ast.Mod: ast.FloorDiv, ast.And: ast.Or, ast.Or: ast.And,
}


@dataclass(frozen=True)
class Mutant:
    line: int
    what: str
    source: str


def _annotation_nodes(tree: ast.AST) -> set[int]:
    """Ids of nodes inside annotations and docstrings: changing them changes nothing that runs."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        parts = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            parts = [node.returns, *(a.annotation for a in node.args.args + node.args.kwonlyargs)]
        elif isinstance(node, ast.AnnAssign):
            parts = [node.annotation]
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body and isinstance(
                node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant):
            parts.append(node.body[0])
        for part in parts:
            if part is not None:
                skip.update(id(n) for n in ast.walk(part))
    return skip


def _sites(tree: ast.AST) -> list[tuple[ast.AST, str, int | None]]:
    """Every mutation site, in ast.walk order (the same order for every parse of the same source)."""
    skip = _annotation_nodes(tree)
    logic = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for stmt in f.body for n in ast.walk(stmt)}
    sites: list[tuple[ast.AST, str, int | None]] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Compare):
            sites += [(node, "ops", i) for i, op in enumerate(node.ops) if type(op) in SWAPS]
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in SWAPS or isinstance(node, ast.BoolOp):
            sites.append((node, "op", None))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            sites.append((node, "not", None))
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float, bool) and id(node) in logic:
            sites.append((node, "const", None))
        elif isinstance(node, (ast.If, ast.While, ast.IfExp)):
            sites.append((node, "negate", None))
    return sites


def mutants(source: str) -> list[Mutant]:
    """One mutant per site: a fresh parse, that site changed, unparsed."""
    out = []
    for k in range(len(_sites(ast.parse(source)))):
        tree = ast.parse(source)
        node, kind, i = _sites(tree)[k]
        what = _mutate(node, kind, i)
        out.append(Mutant(node.lineno, what, ast.unparse(tree)))
    return out


def _mutate(node: ast.AST, kind: str, i: int | None) -> str:
    if kind == "ops":
        old = node.ops[i]
        node.ops[i] = SWAPS[type(old)]()
        return f"{type(old).__name__} -> {type(node.ops[i]).__name__}"
    if kind == "op":
        old = node.op
        node.op = SWAPS[type(old)]()
        return f"{type(old).__name__} -> {type(node.op).__name__}"
    if kind == "not":
        node.op = ast.UAdd()  # `+x` keeps x's truth: the `not` is gone
        return "not removed"
    if kind == "const":
        old = node.value
        node.value = (not old) if isinstance(old, bool) else (old + 1 if isinstance(old, int) else old * 1.5 or 1.0)
        return f"{old!r} -> {node.value!r}"
    node.test = ast.UnaryOp(ast.Not(), node.test)
    return f"{type(node).__name__} condition negated"


def _numbers(part: str) -> range:
    """`7` or `10-12` (inclusive)."""
    first, _, last = part.partition("-")
    return range(int(first), int(last or first) + 1)


def run_tests(tests: list[str], timeout: float) -> tuple[str, str]:
    """(verdict, first failing test): a flaky kill shows as an unrelated test's name."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow", *tests]
    try:
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "killed (timeout)", ""
    if r.returncode == 0:
        return "survived", ""
    failed = re.search(r"^(?:FAILED|ERROR) (\S+)", r.stdout, re.MULTILINE)
    return "killed", failed.group(1) if failed else f"exit {r.returncode}"


def digest(source: str) -> str:
    """The module's code and line numbers without docstrings or comments: editing those keeps a log valid."""
    tree = ast.parse(source)
    for node in ast.walk(tree):  # a statement that is a string alone: a docstring, of a module, class, function or setting
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            node.value.value = ""
            node.end_col_offset = node.value.end_col_offset = 0
    return hashlib.sha256(ast.dump(tree, include_attributes=True).encode()).hexdigest()[:12]


def _logged(log: Path | None, path: str, code: str) -> dict[int, tuple[str, str]]:
    """Verdicts already in the log for this module's code (see `digest`), by mutant number."""
    if log is None or not log.exists():
        return {}
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return {r["k"]: (r["verdict"], r["by"]) for r in rows if r["module"] == path and r["digest"] == code}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--module", action="append", default=None,
                    help="PATH=TEST[,TEST...] (repeatable); default: the four modules of issue 17")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--out", type=Path, default=RESULTS / "mutation.md", help="where the report goes")
    ap.add_argument("--only", default="", help="run these mutants only, by number as printed (1-based): 3,7,10-12")
    ap.add_argument("--log", type=Path, default=None, help="JSON lines, one per mutant; resumes from it")
    args = ap.parse_args()
    only = {k for part in filter(None, args.only.split(",")) for k in _numbers(part)}
    modules = dict(m.split("=", 1) for m in args.module) if args.module else None
    modules = {p: t.split(",") for p, t in modules.items()} if modules else MODULES
    start = time.perf_counter()
    summary: list = []
    survivors: list = []
    caught: dict[tuple[str, str], list[int]] = {}  # (module, first failing test) -> lines of the mutants
    for path, tests in modules.items():
        tests = [t for t in tests if (ROOT / t).exists()]
        file = ROOT / path
        original = file.read_text()
        code = digest(original)
        every = mutants(original)
        found = [(k, m) for k, m in enumerate(every, 1) if not only or k in only]
        done = _logged(args.log, path, code)
        killed = 0
        try:
            file.write_text(ast.unparse(ast.parse(original)) + "\n")
            if len(done) < len(found) and run_tests(tests, args.timeout)[0] != "survived":
                raise SystemExit(f"the tests fail on unmutated {path} (as unparsed): fix that first")
            for k, m in found:
                if k in done:
                    verdict, by = done[k]
                else:
                    file.write_text(m.source + "\n")
                    verdict, by = run_tests(tests, args.timeout)
                    if args.log:
                        with args.log.open("a") as log:
                            log.write(json.dumps({"module": path, "digest": code, "k": k, "line": m.line,
                                                  "what": m.what, "verdict": verdict, "by": by}) + "\n")
                killed += verdict != "survived"
                if verdict != "survived":
                    caught.setdefault((path, by.split("::")[-1] or verdict), []).append(m.line)
                if verdict == "survived":
                    survivors.append((path, k, m))
                print(f"{path} {k}/{len(every)} line {m.line}: {m.what}: {verdict} {by}", flush=True)
        finally:
            file.write_text(original)
        summary.append((path, tests, len(found), killed))
    command = "python benchmarks/mutation.py" + "".join(
        f" --module {p}={','.join(t)}" for p, t in modules.items()) * bool(args.module) + (
        f" --only {args.only}" if only else "")
    lines = ["# Mutation check", "", f"Command: `{command}` ({time.perf_counter() - start:.0f} s)", "",
             "Each mutant is one change at one site (see the script's docstring); `killed`: the module's tests "
             "failed or timed out on it."]
    lines += ["", "| module | tests run | mutants | killed | survived | survived % |", "|---|---|---|---|---|---|"]
    for path, tests, n, killed in summary:
        lines.append(f"| {path} | {', '.join(Path(t).name for t in tests)} | {n} | {killed} | {n - killed} | "
                     f"{100 * (n - killed) / max(n, 1):.1f}% |")
    lines += ["", "## Surviving mutants", "", "| module | mutant | line | mutation |", "|---|---|---|---|"]
    lines += [f"| {p} | {k} | {m.line} | {m.what} |" for p, k, m in survivors]
    lines += ["", "## Which test caught them", "", "The first test to fail on each killed mutant (`pytest -x`; a test "
              "further down the files may catch it too).", "", "| module | test | mutants | at lines |", "|---|---|---|---|"]
    lines += [f"| {p} | {t} | {len(ls)} | {', '.join(map(str, sorted(set(ls))))} |"
              for (p, t), ls in sorted(caught.items(), key=lambda kv: (kv[0][0], -len(kv[1])))]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
