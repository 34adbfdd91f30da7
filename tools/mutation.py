#!/usr/bin/env python
"""Mutation testing of pyomo_nnrelax's core modules with mutmut: a command, not a CI job.

Each module is mutated on its own (mutmut 3 copies the package into ``./mutants/`` and never
touches the working tree) and tested with the test files that cover it (:data:`TESTS`); for
every mutant mutmut runs only the tests that reach the mutated function.  The script prints,
per module, the mutants, how many were killed, which survived (with their diffs) and which of
those are named equivalent in ``tools/mutation_equivalents.toml``, and the score::

    OPENBLAS_NUM_THREADS=1 nice -n 15 python tools/mutation.py              # the recorded set
    OPENBLAS_NUM_THREADS=1 nice -n 15 python tools/mutation.py pyomo_nnrelax/ties.py
    OPENBLAS_NUM_THREADS=1 nice -n 15 python tools/mutation.py --core       # all (hours)
    python tools/mutation.py --list                  # the modules and the tests each one runs

It exits 1 when a mutant survives that is not named equivalent, so "no unexplained survivors"
is checkable.  Results are kept in ``.mutation/`` (git-ignored): one log and one JSON file per
module.  Needs ``pip install mutmut==3.8.1`` (the version the recorded scores were taken with)
and Python 3.11 or later.  The configuration shared by every run is ``[tool.mutmut]`` in
pyproject.toml; this script sets the module and its tests per run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / ".mutation"
EQUIVALENTS = Path(__file__).resolve().parent / "mutation_equivalents.toml"
MUTMUT_VERSION = "3.8.1"

#: The test files that cover each core module (paths relative to the repository; files that
#: do not exist are left out).  Keys are modules or folder globs; the first match applies.
TESTS: dict[str, list[str]] = {
    "pyomo_nnrelax/box.py": [
        "tests/test_box.py",
        "tests/test_block_variables.py",
        "tests/test_box_edges.py",
    ],
    "pyomo_nnrelax/bounds.py": [
        "tests/test_bounds.py",
        "tests/test_mixed_layers.py",
        "tests/test_bounds_edges.py",
    ],
    "pyomo_nnrelax/refinement/budget.py": [
        "tests/refinement/test_budget.py",
        "tests/refinement/test_budget_edges.py",
    ],
    # not tests/training/test_tied_parameters.py: its networks are drawn from a module-level
    # generator, so they depend on which tests ran before, and on the subsets mutmut runs its
    # [cnn-RS] case fails on the unmutated code (its gradient is zero: "vacuous")
    "pyomo_nnrelax/ties.py": [
        "tests/training/test_bias_ties.py",
        "tests/test_mixed_layers.py",
        "tests/test_ties_edges.py",
    ],
    "pyomo_nnrelax/matrices.py": [
        "tests/test_matrices.py",
        "tests/test_matrices_edges.py",
    ],
    "pyomo_nnrelax/network.py": ["tests/test_network.py", "tests/test_mixed_layers.py"],
    "pyomo_nnrelax/formulations/*": [
        "tests/formulations",
        "tests/test_block.py",
        "tests/test_mixed_layers.py",
    ],
    "pyomo_nnrelax/lp/*": ["tests/lp", "tests/test_relaxation.py"],
    "pyomo_nnrelax/onnx/*": [
        "tests/onnx/test_hand_built_graphs.py",
        "tests/onnx/test_index_maps.py",
        "tests/onnx/test_read_write.py",
    ],
    "pyomo_nnrelax/training/*": [  # not test_tied_parameters.py (see ties.py above)
        "tests/training/test_adversarial.py",
        "tests/training/test_balls.py",
        "tests/training/test_bias_ties.py",
        "tests/training/test_dual.py",
        "tests/training/test_regularizers.py",
        "tests/training/test_trainer.py",
    ],
    "pyomo_nnrelax/refinement/*": ["tests/refinement"],
}

#: The modules run by default: pure and central, the ones whose scores docs/reliability.md
#: records.
DEFAULT = [
    "pyomo_nnrelax/box.py",
    "pyomo_nnrelax/bounds.py",
    "pyomo_nnrelax/refinement/budget.py",
    "pyomo_nnrelax/ties.py",
    "pyomo_nnrelax/matrices.py",
]

#: Every module of the core packages (network, bounds, box, formulations, lp, onnx, training,
#: refinement).
CORE_GLOBS = [
    "pyomo_nnrelax/network.py",
    "pyomo_nnrelax/bounds.py",
    "pyomo_nnrelax/box.py",
    "pyomo_nnrelax/ties.py",
    "pyomo_nnrelax/matrices.py",
    "pyomo_nnrelax/formulations/*.py",
    "pyomo_nnrelax/lp/*.py",
    "pyomo_nnrelax/onnx/*.py",
    "pyomo_nnrelax/training/*.py",
    "pyomo_nnrelax/refinement/*.py",
]


@dataclass
class Outcome:
    """What one module's run gave."""

    module: str
    seconds: float
    counts: dict[str, int]
    survivors: list[dict[str, str]] = field(default_factory=list)
    equivalent: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def killed(self) -> int:
        return self.counts.get("killed", 0) + self.counts.get("timeout", 0)

    @property
    def score(self) -> float:
        """Killed over the mutants that can be killed (all but the named equivalent ones)."""
        killable = self.total - len(self.equivalent)
        return self.killed / killable if killable else 1.0


def tests_for(module: str) -> list[str]:
    """The existing test files and folders that :data:`TESTS` gives ``module``."""
    from fnmatch import fnmatch

    for pattern, tests in TESTS.items():
        if module == pattern or fnmatch(module, pattern):
            return [t for t in tests if (ROOT / t).exists()]
    raise SystemExit(f"no test files are configured for {module}: add it to TESTS in {__file__}")


def core_modules() -> list[str]:
    """Every module the core globs name, ``__init__`` files without code left out."""
    found = []
    for pattern in CORE_GLOBS:
        for path in sorted(ROOT.glob(pattern)):
            if path.name == "__init__.py" and not _has_functions(path):
                continue
            found.append(path.relative_to(ROOT).as_posix())
    return list(dict.fromkeys(found))


def _has_functions(path: Path) -> bool:
    text = path.read_text()
    return "\ndef " in text or "\n    def " in text


def function_of(mutant: str, module: str) -> str:
    """``InputBox.__init__`` or ``as_input_box`` from mutmut's mutant name."""
    dotted = module.removesuffix(".py").replace("/", ".") + "."
    name = mutant.removeprefix(dotted).rsplit("__mutmut_", 1)[0]
    if name.startswith("x\u01c1"):
        return ".".join(part for part in name[1:].split("\u01c1") if part)
    return name.removeprefix("x_")


def changed_lines(diff: str) -> tuple[str, str]:
    """The original and the mutated lines of a mutant's diff, stripped and joined."""
    lines = diff.splitlines()
    removed = [l[1:].strip() for l in lines if l.startswith("-") and not l.startswith("---")]
    added = [l[1:].strip() for l in lines if l.startswith("+") and not l.startswith("+++")]
    return "\n".join(removed), "\n".join(added)


def load_equivalents() -> list[dict[str, str]]:
    """The named equivalent mutants: module, function, original and mutated line, reason."""
    if not EQUIVALENTS.exists():
        return []
    return tomllib.loads(EQUIVALENTS.read_text())["equivalent"]


def changed_line_number(diff: str) -> int | None:
    """The line of the function (1 = its ``def``) where a mutant's diff first differs."""
    number = None
    for line in diff.splitlines():
        if line.startswith("@@"):
            number = int(line.split()[1].split(",")[0].lstrip("-"))
        elif number is not None and not line.startswith(("---", "+++")):
            if line.startswith(("-", "+")):
                return number
            number += 1
    return None


def is_equivalent(survivor: dict[str, str], known: list[dict]) -> dict | None:
    """The entry of ``known`` naming ``survivor`` equivalent: the same module, function,
    original and mutated line, and, where the entry gives one, the same line of the function
    (for a line that occurs twice in it)."""
    for entry in known:
        if (
            entry["module"] == survivor["module"]
            and entry["function"] == survivor["function"]
            and entry["original"].strip() == survivor["original"]
            and entry["mutant"].strip() == survivor["mutant"]
            and entry.get("line", changed_line_number(survivor["diff"]))
            == changed_line_number(survivor["diff"])
        ):
            return entry
    return None


# ------------------------------------------------------------------- one module (child process)
def run_one(module: str, tests: list[str], max_children: int, names: list[str]) -> None:
    """Run mutmut on ``module`` with ``tests`` in this process and write its JSON result
    (only the mutants ``names`` when given).

    Runs in a process of its own: mutmut keeps its configuration and state in globals."""
    os.chdir(ROOT)
    shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    # Pyomo's log handler keeps the sys.stdout of the moment pyomo is imported; mutmut runs
    # pytest several times in this process, and a handler bound to the first run's captured
    # (then closed) stdout breaks Pyomo's output capture in the next.  Import it first.
    import mutmut
    import pyomo.common.log  # noqa: F401
    from mutmut.__main__ import cli
    from mutmut.configuration import config
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code

    if mutmut.__version__ != MUTMUT_VERSION:
        print(f"warning: mutmut {mutmut.__version__}, the scores were recorded with "
              f"{MUTMUT_VERSION}", file=sys.stderr)  # fmt: skip
    cfg = config()
    cfg.only_mutate = [module]
    cfg.pytest_add_cli_args_test_selection = list(tests)
    error = None
    try:
        cli.main(["run", "--max-children", str(max_children), *names], standalone_mode=False)
    except SystemExit as exc:  # mutmut exits when the clean tests fail
        if exc.code:
            error = f"mutmut stopped with exit code {exc.code} (see the log)"
    meta = ROOT / "mutants" / f"{module}.meta"
    codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
    if names:
        codes = {name: code for name, code in codes.items() if name in names}
    counts: dict[str, int] = {}
    survivors = []
    for name, code in sorted(codes.items(), key=lambda kv: _natural(kv[0])):
        status = status_by_exit_code[code]
        counts[status] = counts.get(status, 0) + 1
        if status in ("survived", "no tests"):
            diff = get_diff_for_mutant(name, path=module)
            original, mutant = changed_lines(diff)
            survivors.append(
                {
                    "name": name,
                    "module": module,
                    "function": function_of(name, module),
                    "status": status,
                    "original": original,
                    "mutant": mutant,
                    "diff": diff,
                }
            )
    if not codes and error is None:
        error = "no mutants were run (see the log)"
    result = {
        "module": module,
        "source": _digest(module),
        "counts": counts,
        "survivors": survivors,
        "error": error,
    }
    RESULTS.mkdir(exist_ok=True)
    _result_path(module).write_text(json.dumps(result, indent=1))


def _digest(module: str) -> str:
    return hashlib.sha256((ROOT / module).read_bytes()).hexdigest()[:16]


def _natural(name: str) -> tuple[str, int]:
    stem, _, number = name.rpartition("__mutmut_")
    return stem, int(number) if number.isdigit() else 0


def _result_path(module: str) -> Path:
    return RESULTS / (module.removesuffix(".py").replace("/", ".") + ".json")


# ------------------------------------------------------------------------- driver
def run_module(module: str, max_children: int, survivors_only: bool = False) -> Outcome:
    """Run one module in a child process (its output goes to ``.mutation/<module>.log``).

    With ``survivors_only``, only the mutants that survived the module's last run (and are not
    named equivalent) run again, and their results replace the old ones in that run's record:
    quick, once tests were added, as long as the module has not changed since."""
    tests = tests_for(module)
    RESULTS.mkdir(exist_ok=True)
    path = _result_path(module)
    log = path.with_suffix(".log")
    known = load_equivalents()
    names: list[str] = []
    previous = None
    if survivors_only:
        if not path.exists():
            raise SystemExit(f"--survivors: {module} has no recorded run in {RESULTS}")
        previous = json.loads(path.read_text())
        if previous.get("source") != _digest(module):
            raise SystemExit(f"--survivors: {module} changed since its last run: run it in full")
        names = [s["name"] for s in previous["survivors"] if is_equivalent(s, known) is None]
        if not names:
            return _outcome(module, 0.0, previous, known)
    path.unlink(missing_ok=True)
    env = dict(os.environ)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    command = [sys.executable, __file__, "--child", module, "--max-children", str(max_children)]
    command += ["--tests", *tests, "--names", *names]
    start = time.monotonic()
    with log.open("w") as out:
        subprocess.run(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    seconds = time.monotonic() - start
    if not path.exists():
        if previous is not None:
            path.write_text(json.dumps(previous, indent=1))
        return Outcome(module, seconds, {}, error=f"the run failed: see {log}")
    data = json.loads(path.read_text())
    if previous is not None:
        data = _merge(previous, data, names)
        path.write_text(json.dumps(data, indent=1))
    return _outcome(module, seconds, data, known)


def _merge(previous: dict, rerun: dict, names: list[str]) -> dict:
    """The record of ``previous`` with the results of the mutants ``names``, run again in
    ``rerun``, in place of their old ones."""
    again = set(names)
    counts = dict(previous["counts"])
    for survivor in previous["survivors"]:
        if survivor["name"] in again:
            counts[survivor["status"]] -= 1
    for status, n in rerun["counts"].items():
        counts[status] = counts.get(status, 0) + n
    kept = [s for s in previous["survivors"] if s["name"] not in again]
    survivors = sorted(kept + rerun["survivors"], key=lambda s: _natural(s["name"]))
    counts = {status: n for status, n in counts.items() if n}
    return {**previous, "counts": counts, "survivors": survivors, "error": rerun["error"]}


def _outcome(module: str, seconds: float, data: dict, known: list[dict[str, str]]) -> Outcome:
    outcome = Outcome(module, seconds, data["counts"], error=data["error"])
    for survivor in data["survivors"]:
        entry = is_equivalent(survivor, known)
        if entry is None:
            outcome.survivors.append(survivor)
        else:
            outcome.equivalent.append({**survivor, "reason": entry["reason"]})
    return outcome


def report(outcome: Outcome, show_equivalent: bool) -> None:
    counts = ", ".join(f"{n} {status}" for status, n in sorted(outcome.counts.items()))
    print(f"\n== {outcome.module}: {outcome.total} mutants ({counts}) in {outcome.seconds:.0f} s")
    if outcome.error:
        print(f"   ERROR: {outcome.error}")
    for survivor in outcome.survivors:
        print(f"\n-- {survivor['status']}: {survivor['name']}  ({survivor['function']})")
        print(survivor["diff"])
    if show_equivalent:
        for eq in outcome.equivalent:
            print(f"   equivalent: {eq['function']}: {eq['mutant']!r}: {eq['reason']}")


def table(outcomes: list[Outcome]) -> str:
    rows = [
        "| module | mutants | killed | survived | equivalent | score | time |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for o in outcomes:
        rows.append(
            f"| `{o.module}` | {o.total} | {o.killed} | {len(o.survivors)} | "
            f"{len(o.equivalent)} | {100 * o.score:.1f}% | {o.seconds:.0f} s |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="modules to mutate (default: the recorded set)")
    parser.add_argument("--core", action="store_true", help="every core module (slow: hours)")
    parser.add_argument("--list", action="store_true", help="print the modules and their tests")
    parser.add_argument(
        "--max-children",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="mutants tested at once (default: 2, or 1 on one core)",
    )
    parser.add_argument("--show-equivalent", action="store_true", help="list them with reasons")
    parser.add_argument(
        "--survivors",
        action="store_true",
        help="run again only the mutants that survived the last run (after adding tests)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--tests", nargs="*", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--names", nargs="*", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_one(args.child, args.tests, args.max_children, args.names)
        return 0
    modules = core_modules() if args.core else (args.modules or DEFAULT)
    if args.list:
        for module in modules:
            print(f"{module}: {' '.join(tests_for(module))}")
        return 0
    outcomes = []
    for module in modules:
        print(f"mutating {module} with {' '.join(tests_for(module))} ...", flush=True)
        outcomes.append(run_module(module, args.max_children, args.survivors))
        report(outcomes[-1], args.show_equivalent)
    killed = sum(o.killed for o in outcomes)
    killable = sum(o.total - len(o.equivalent) for o in outcomes)
    print("\n" + table(outcomes))
    print(f"\nscore: {killed} of {killable} killable mutants killed "
          f"({100 * killed / max(killable, 1):.1f}%)")  # fmt: skip
    unexplained = sum(len(o.survivors) for o in outcomes)
    if unexplained or any(o.error for o in outcomes):
        print(f"{unexplained} surviving mutants are neither killed nor named equivalent in "
              f"{EQUIVALENTS.relative_to(ROOT)}")  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
