"""Regression cases: a scenario plus the expected verdict of each implementation.

A case is a text scenario in `corpus/regressions/` whose leading comment
records, per implementation, what the oracle said when it was exported:

    ; expect reference: agrees
    ; expect prepatch: l1 = EXIT EXCEPTION_NMI #PF, IDT-vectoring: None
    ; expect postpatch: agrees
    ; verdict prepatch->postpatch: fixed

An implementation that agrees with the reference `agrees`; one that differs
lists each diverging field with the shape of its own value there (never the
other implementations', so registering a new implementation does not change
an old expectation).  `tests/test_regressions.py` checks every case; an
implementation the case does not mention is not checked.
"""
from __future__ import annotations

import re
from pathlib import Path

from fuzz import oracle
from fuzz.scenario import EvdiffError, Scenario
from fuzz.text import format_scenario, read_scenario

#: The project's regression cases (`tests/test_regressions.py` reads them
#: here): in a source tree, or an editable install of one.
REGRESSIONS = Path(__file__).resolve().parent.parent / "corpus" / "regressions"
_EXPECT = re.compile(r"^expect ([\w.-]+): (.*)$")
_VERDICT = re.compile(r"^verdict ([\w.-]+->[\w.-]+): (.*)$")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def expectations(report: oracle.Report) -> dict[str, list[str]]:
    """impl -> sorted list of 'field = shape' (empty: agrees)."""
    out: dict[str, list[str]] = {n: [] for n in report.results}
    for d in report.divergences:
        for name in d.impls:
            out[name].append(f"{d.field} = {d.got.get(name, '?')}")
    return {n: sorted(v) for n, v in out.items()}


def verdicts(report: oracle.Report) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for d in report.divergences:
        for pair, v in d.verdicts.items():
            out.setdefault(pair, set()).add(v)
    return out


def header(report: oracle.Report) -> list[str]:
    lines = []
    for name, exp in expectations(report).items():
        if not exp:
            lines.append(f"expect {name}: agrees")
        lines += [f"expect {name}: {e}" for e in exp]
    for pair, vs in sorted(verdicts(report).items()):
        lines.append(f"verdict {pair}: {', '.join(sorted(vs))}")
    return lines


def parse_header(scenario: Scenario) -> tuple[dict[str, list[str]], dict[str, set[str]], list[str]]:
    """(expectations, verdicts, other description lines) of a case."""
    exp: dict[str, list[str]] = {}
    ver: dict[str, set[str]] = {}
    rest = []
    for line in scenario.description.splitlines():
        if m := _EXPECT.match(line):
            exp.setdefault(m[1], [])
            if m[2] != "agrees":
                exp[m[1]].append(m[2])
        elif m := _VERDICT.match(line):
            ver[m[1]] = {v.strip() for v in m[2].split(",")}
        else:
            rest.append(line)
    return {n: sorted(v) for n, v in exp.items()}, ver, rest


def regressions_dir(corpus: Path | None) -> Path:
    """Where `export-test` writes: `CORPUS/regressions`, by default the
    project's.  An installed copy of evdiff (`pip install .`, not `-e`) has
    no project beside it: then `./corpus/regressions` if there is one, never
    a directory inside the installation."""
    if corpus is not None:
        return Path(corpus) / "regressions"
    if REGRESSIONS.parent.is_dir():  # a source tree
        return REGRESSIONS
    here = Path("corpus") / "regressions"
    if here.is_dir():
        return here
    raise EvdiffError(f"{REGRESSIONS.parent}: evdiff is installed without its source tree, and there is no "
                      "./corpus/regressions here: give --corpus DIR (the project's corpus directory; "
                      "the case goes to DIR/regressions)")


def export(scenario: Scenario, name: str, directory: Path = REGRESSIONS, names: list[str] | None = None) -> Path:
    """Write `scenario` as regression case `name`; refuses to overwrite."""
    if not _NAME.fullmatch(name):
        shown = name if len(name) <= 40 else name[:40] + "..."
        raise EvdiffError(f"--name {shown!r}: a regression name is 1 to 100 letters, digits, '_', '-' or '.', "
                          "starting with a letter or digit")
    path = directory / f"{name}.txt"
    if path.exists():
        raise EvdiffError(f"{path} exists: choose another --name (a regression case is never overwritten)")
    report = oracle.compare(scenario, names)
    _, _, keep = parse_header(scenario)
    desc = [line for line in keep if line] + header(report)
    text = format_scenario(Scenario(scenario.config, scenario.events, "\n".join(desc)))
    directory.mkdir(parents=True, exist_ok=True)
    with open(path, "x") as f:  # 'x': fail rather than overwrite, even in a race
        f.write(text)
    return path


def check(path: Path) -> tuple[list[str], oracle.Report]:
    """Mismatches between a case's recorded expectations and today's oracle."""
    scenario = read_scenario(path)
    exp, ver, _ = parse_header(scenario)
    if not exp:
        raise EvdiffError(f"{path}: no 'expect' lines: not a regression case")
    names = [n for n in exp if n in oracle.api.IMPLEMENTATIONS]
    report = oracle.compare(scenario, names)
    now_exp, now_ver = expectations(report), verdicts(report)
    problems = []
    for name in names:
        if now_exp[name] != exp[name]:
            problems.append(f"{name}: expected {exp[name] or 'agrees'}, now {now_exp[name] or 'agrees'}")
    for pair, vs in ver.items():
        if pair in now_ver or all(n in names for n in pair.split("->")):
            if now_ver.get(pair, set()) != vs:
                problems.append(f"verdict {pair}: expected {sorted(vs)}, now {sorted(now_ver.get(pair, set()))}")
    return problems, report
