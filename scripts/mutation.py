"""Mutation testing of giantstep's core modules: mutmut, the equivalent mutants, the score.

    python3 scripts/mutation.py                               # every core module (hours)
    python3 scripts/mutation.py --module giantstep.hermite    # one module (repeatable)
    python3 scripts/mutation.py --module giantstep.hermite --rerun undetected
    python3 scripts/mutation.py --rerun none                  # report the last results
    python3 scripts/mutation.py --module giantstep.hermite --show-undetected

mutmut's configuration (the core modules, ``only_mutate``, and the test selection: the science
tests) is ``[tool.mutmut]`` in pyproject.toml; this script passes it nothing else. It runs
``mutmut run --max-children JOBS`` (``--jobs``, default 1) from the repository's root on the
chosen modules (its output goes to ``mutants/mutation-run.log``), then reads mutmut's results and
``tests/mutation/equivalent.txt``: one line per mutant that cannot change an observable result,

    giantstep.hermite.x_hermite__mutmut_3  0123abcd  # why it is equivalent

where the second field is the mutant's fingerprint (a hash of the lines it changes, printed by
``--show-undetected``): when the code moves and mutmut's numbering now names another mutation,
the fingerprint no longer matches and the line no longer counts.

It prints, per module and overall: mutants, killed, timeouts, survived (survivors, mutants no
selected test reaches, and any other result that is not a failure), listed equivalent, and the
score ``detected / (all − equivalent)`` with detected = killed + timeouts, over the mutants that
have a result: those an interrupted run has not reached are counted apart, as not run yet. It
exits 1 if a survivor is not listed as equivalent, or if the score is below 90 %.

``--rerun all`` (the default) tests every mutant of the chosen modules again; ``undetected``
only those that survived last time (to check new tests); ``untested`` those without a result
(to finish an interrupted run); ``none`` only reports. mutmut keeps
its map of which tests reach which function in ``mutants/``; new test functions are added to it,
but after changing what an existing test reaches, start again with ``--fresh``.

Each mutant runs on one core (``OMP_NUM_THREADS=1``) and with numba's ``workqueue`` threading
layer: mutmut forks a process per mutant, and a process forked after GNU OpenMP has started
terminates itself.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENT = ROOT / "tests" / "mutation" / "equivalent.txt"
MUTANTS = ROOT / "mutants"
LOG = MUTANTS / "mutation-run.log"
THRESHOLD = 0.90

# mutmut's exit codes of a mutant's test run (mutmut/stats.py): a failing test kills it, a
# timeout or a crash detects it too; every other result leaves the mutant undetected.
KILLED = {1, 3, -11, -9, 37}
TIMEOUT = {36, 24, -24, 152, 255}
NO_TESTS = {33, 5}


def core_modules() -> dict[str, Path]:
    """Dotted module name -> its source path, from ``only_mutate`` in pyproject.toml."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    modules = {}
    for path in config["only_mutate"]:
        relative = Path(path).relative_to("src")
        modules[".".join(relative.with_suffix("").parts)] = Path(path)
    return modules


@dataclass
class Tally:
    """The results of one module's mutants."""

    killed: list[str] = field(default_factory=list)
    timeout: list[str] = field(default_factory=list)
    survived: list[str] = field(default_factory=list)
    equivalent: list[str] = field(default_factory=list)
    # Mutants without a result yet (an interrupted run): in no count and not in the score.
    untested: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.killed) + len(self.timeout) + len(self.survived) + len(self.equivalent)

    @property
    def score(self) -> float:
        judged = self.total - len(self.equivalent)
        return (len(self.killed) + len(self.timeout)) / judged if judged else 1.0

    def add(self, other: Tally) -> None:
        for name in ("killed", "timeout", "survived", "equivalent", "untested"):
            getattr(self, name).extend(getattr(other, name))


def results(path: Path) -> dict[str, int | None]:
    """mutmut's recorded exit code of each mutant of the source file at path."""
    meta = MUTANTS / (str(path) + ".meta")
    if not meta.exists():
        return {}
    return json.loads(meta.read_text())["exit_code_by_key"]


def read_equivalent() -> dict[str, tuple[str, str]]:
    """Mutant name -> (fingerprint, reason) from the equivalence file."""
    listed = {}
    if not EQUIVALENT.exists():
        return listed
    for number, line in enumerate(EQUIVALENT.read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        entry, _, reason = text.partition("#")
        fields = entry.split()
        if len(fields) != 2 or not reason.strip():
            sys.exit(f"{EQUIVALENT}:{number}: expected 'name  fingerprint  # reason': {line}")
        if fields[0] in listed:
            sys.exit(f"{EQUIVALENT}:{number}: {fields[0]} is listed twice")
        listed[fields[0]] = (fields[1], reason.strip())
    return listed


class MutatedSource:
    """The functions of one mutated file (mutants/src/...), to show and fingerprint mutants."""

    def __init__(self, path: Path):
        self.source = (MUTANTS / path).read_text()
        self.functions = {
            node.name: node
            for node in ast.walk(ast.parse(self.source))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        }

    def _lines(self, name: str) -> list[str]:
        node = self.functions[name]
        lines = (ast.get_source_segment(self.source, node, padded=True) or "").splitlines()
        # The def line names the mutant (x_f__mutmut_3): name them all alike, so that a
        # mutated default argument shows and nothing else does.
        return [lines[0].replace(name, "f", 1), *lines[1:]] if lines else []

    def diff(self, mutant: str) -> list[str]:
        """The changed lines, ``-`` original and ``+`` mutant."""
        function = mutant.rpartition(".")[2]
        original = function.rpartition("__mutmut_")[0] + "__mutmut_orig"
        if function not in self.functions or original not in self.functions:
            return [f"? {mutant} is not in {MUTANTS}"]
        lines = difflib.ndiff(self._lines(original), self._lines(function))
        return [line.rstrip() for line in lines if line[:1] in "+-"]

    def fingerprint(self, mutant: str) -> str:
        stem = mutant.rpartition(".")[2].rpartition("__mutmut_")[0]
        text = stem + "\n" + "\n".join(line[0] + line[1:].strip() for line in self.diff(mutant))
        return hashlib.sha256(text.encode()).hexdigest()[:8]


def sync_data_files() -> None:
    """Copy src/'s non-Python files (the default config, ...) to mutants/src when they changed.

    mutmut copies them once, when it first makes mutants/src, and regenerates only the Python
    files after that: a config file changed since (a new key) would fail the clean test run.
    """
    source = ROOT / "src"
    for path in source.rglob("*"):
        if path.suffix in {".py", ".pyc"} or "__pycache__" in path.parts or not path.is_file():
            continue
        target = MUTANTS / "src" / path.relative_to(source)
        if target.parent.exists() and (
            not target.exists() or target.read_bytes() != path.read_bytes()
        ):
            shutil.copy2(path, target)


def run_mutmut(names: list[str], jobs: int) -> int:
    """``mutmut run --max-children jobs names...`` from the root, output to LOG; its exit code."""
    executable = shutil.which("mutmut") or str(Path(sys.executable).parent / "mutmut")
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    env["NUMBA_THREADING_LAYER"] = "workqueue"
    MUTANTS.mkdir(exist_ok=True)
    sync_data_files()
    with open(LOG, "w") as log:
        process = subprocess.run(
            [executable, "run", "--max-children", str(jobs), *names],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    return process.returncode


def classify(
    module: str, path: Path, listed: dict[str, tuple[str, str]], problems: list[str]
) -> Tally:
    tally = Tally()
    codes = {name: code for name, code in results(path).items() if name.startswith(module + ".")}
    source = MutatedSource(path) if codes else None
    for name, code in sorted(codes.items()):
        if code is None:
            tally.untested.append(name)
        elif code in KILLED:
            tally.killed.append(name)
        elif code in TIMEOUT:
            tally.timeout.append(name)
        elif name in listed:
            expected = listed[name][0]
            actual = source.fingerprint(name)
            if actual == expected:
                tally.equivalent.append(name)
            else:
                problems.append(
                    f"{name}: listed as equivalent with fingerprint {expected}, but the mutant "
                    f"is now {actual} (the code moved): judge it again"
                )
                tally.survived.append(name)
        else:
            tally.survived.append(name)
    for name in listed:
        if name.startswith(module + ".") and name in codes:
            if codes[name] in KILLED or codes[name] in TIMEOUT:
                problems.append(f"{name}: listed as equivalent but detected: remove the line")
        elif name.startswith(module + ".") and codes:
            problems.append(f"{name}: listed as equivalent but mutmut has no such mutant")
    return tally


def positive_int(text: str) -> int:
    """argparse type of --jobs: a whole number of mutants at once, at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    modules = core_modules()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--module",
        action="append",
        choices=sorted(modules),
        metavar="MODULE",
        help="a core module, e.g. giantstep.hermite (repeatable; default: all of them)",
    )
    parser.add_argument(
        "--rerun",
        choices=("all", "undetected", "untested", "none"),
        default="all",
        help="which mutants to test: all (default), those undetected last time (or never "
        "tested), those never tested (an interrupted run), none",
    )
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="mutants tested at once, one core each (default 1: the machine stays usable)",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="delete mutants/ first (mutmut's map of tests)"
    )
    parser.add_argument(
        "--show-undetected",
        action="store_true",
        help="print each unlisted survivor with its fingerprint and the lines it changes",
    )
    args = parser.parse_args(argv)
    chosen = args.module or sorted(modules)

    started = time.monotonic()
    if args.fresh and MUTANTS.exists():
        shutil.rmtree(MUTANTS)
    if args.rerun != "none":
        if args.rerun == "all" or not MUTANTS.exists():
            names = [f"{module}.*" for module in chosen]
        else:
            # "*name" selects exactly that mutant (no other name ends with it); a plain name
            # would make mutmut look it up in its map of tests, where a mutant that no test
            # reaches is missing.
            listed = read_equivalent()
            names = [
                "*" + name
                for module in chosen
                for name, code in results(modules[module]).items()
                if name.startswith(module + ".")
                and (code is None if args.rerun == "untested" else code not in KILLED | TIMEOUT)
                and name not in listed
            ]
        if names:
            print(f"mutmut run on {len(chosen)} module(s), {len(names)} name(s); log: {LOG}")
            code = run_mutmut(names, args.jobs)
            if code:
                print(f"mutmut exited with {code}; the end of {LOG}:")
                print("\n".join(LOG.read_text(errors="replace").splitlines()[-30:]))
                return 2
    elapsed = time.monotonic() - started

    listed = read_equivalent()
    problems: list[str] = []
    overall = Tally()
    header = f"{'module':34} {'mutants':>7} {'killed':>7} {'timeout':>7} {'survived':>8}"
    print(header + f" {'equiv.':>6} {'score':>7}")
    for module in chosen:
        tally = classify(module, modules[module], listed, problems)
        overall.add(tally)
        print(
            f"{module:34} {tally.total:7d} {len(tally.killed):7d} {len(tally.timeout):7d} "
            f"{len(tally.survived):8d} {len(tally.equivalent):6d} {tally.score:7.1%}"
        )
        if tally.untested:
            print(f"  ({len(tally.untested)} of its mutants not run yet)")
        if args.show_undetected and tally.survived:
            source = MutatedSource(modules[module])
            codes = results(modules[module])
            for name in tally.survived:
                status = {0: ""}.get(codes[name], f"  (exit {codes[name]})")
                status = "  (no test reaches it)" if codes[name] in NO_TESTS else status
                print(f"  {name}  {source.fingerprint(name)}{status}")
                for line in source.diff(name):
                    print(f"      {line}")
    print(
        f"{'overall':34} {overall.total:7d} {len(overall.killed):7d} {len(overall.timeout):7d} "
        f"{len(overall.survived):8d} {len(overall.equivalent):6d} {overall.score:7.1%}"
    )
    if overall.untested:
        print(
            f"{len(overall.untested)} mutant(s) not run yet, in no count above "
            "(--rerun untested runs them)"
        )
    if args.rerun != "none":
        print(f"wall time {elapsed / 60:.1f} min")
    for problem in problems:
        print("problem:", problem)
    failed = False
    if overall.total == 0:
        print("no results: run without --rerun none first")
        failed = True
    if overall.survived:
        print(f"{len(overall.survived)} survivor(s) neither killed nor listed in {EQUIVALENT}")
        failed = True
    if overall.score < THRESHOLD:
        print(f"score {overall.score:.1%} is below {THRESHOLD:.0%}")
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
