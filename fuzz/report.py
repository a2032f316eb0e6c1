"""`evdiff report`: a campaign as one HTML page, read in the morning.

One self-contained file (`findings/report.html` by default): inline CSS, the
plots drawn as inline SVG, no script, nothing fetched (its
Content-Security-Policy forbids it), so it opens offline and travels as a
mail attachment.  What it shows, from the findings directory alone:

* the campaign (`stats.json`: engine, implementations, duration, executions,
  execs/s, coverage, corpus) and, from `plot_data.csv`, execs/s, coverage
  and distinct findings over fuzzing time, a dashed line at each resume;
* the root causes (`fuzz.findings`), most hits first, each with its
  implementations, verdicts, blamed KVM function, hits, first and last seen,
  and, to unfold, the smallest scenario, the side-by-side explanation of it
  (`fuzz.explain`, run again now) and its `evdiff export-test` command
  (`fuzz.campaign.export_command`);
* apart, the causes of the known-divergences list (`fuzz.known`) with their
  reason.

The campaign writes it at the end of every run (`fuzz.campaign.run`); the
explanations run the implementations the campaign ran where they are
registered here.
"""
from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from html import escape
from pathlib import Path

from fuzz import campaign, oracle, targetenv
from fuzz import findings as fstore
from fuzz.explain import explain
from fuzz.scenario import EvdiffError
from fuzz.text import read_scenario
from impls import api

TEMPLATE = "report.html.j2"
#: Points kept per plotted line (a night at one row every 5 s has ~6,000).
MAX_POINTS = 600
PLOTS = (("execs_per_s", "executions / s"), ("cov", "coverage (libFuzzer cov)"), ("findings", "distinct findings"))


@dataclass
class Entry:
    """One finding as the page shows it (`finding.json`, with defaults for
    what an older store did not write)."""

    signature: str
    hash: str  # the finding's directory name
    impls: list[str]
    verdicts: dict[str, str]
    function: str
    field: str
    hits: int
    first_seen: str
    last_seen: str
    events: int  # of the smallest scenario
    examples: int
    shrunk: bool
    text: str  # smallest.txt as it is on disk
    explanation: str  # `explain(..., "html")`, or why there is none
    export: str  # the `evdiff export-test` command
    reason: str | None = None  # the known list's, for a known cause


# ------------------------------------------------------------ reading --


def read_stats(root: Path) -> dict:
    """`stats.json` of the last run, or {} where there is none."""
    try:
        data = json.loads((root / "stats.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_plot(root: Path) -> list[list[dict]]:
    """`plot_data.csv` as runs (a resumed campaign starts again at elapsed
    0), each a list of rows of floats; a torn row (a campaign killed while
    appending) is left out."""
    runs: list[list[dict]] = []
    try:
        with open(root / "plot_data.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return runs
    for row in rows:
        try:
            values = {k: float(v) for k, v in row.items() if k is not None}
        except (TypeError, ValueError):
            continue
        if not {"elapsed_s", "execs"} <= set(values):
            continue
        if not runs or values["elapsed_s"] < runs[-1][-1]["elapsed_s"]:
            runs.append([])
        runs[-1].append(values)
    return runs


def _names(stats: dict) -> tuple[list[str], list[str]]:
    """The implementations to explain with: the campaign's where they are
    registered here, else all registered; and the campaign's that are not."""
    targetenv.register_extra(api)
    ran = stats.get("implementations") or []
    missing = [n for n in ran if n not in api.IMPLEMENTATIONS]
    names = [n for n in ran if n in api.IMPLEMENTATIONS]
    if len(names) < 2:
        names = api.names()
    if oracle.REFERENCE not in names:
        names.insert(0, oracle.REFERENCE)
    return names, missing


def entry(f: fstore.Finding, names: list[str], reason: str | None = None) -> Entry:
    path = f.path / "smallest.txt"
    try:
        text = path.read_text()
        explanation = explain(oracle.compare(read_scenario(path), names), "html")
    except OSError as e:
        text, explanation = "", f'<p class="none">{escape(f"{path}: {e.strerror}")}</p>'
    except EvdiffError as e:
        explanation = f'<p class="none">{escape(str(e))}</p>'
    m = f.meta
    return Entry(f.signature, f.path.name, list(m.get("impls", [])), dict(m.get("verdicts", {})),
                 m.get("function", "?"), m.get("field", "?"), f.hits, m.get("first_seen", "?").replace("T", " "),
                 m.get("last_seen", "?").replace("T", " "), f.smallest_events,
                 len(list((f.path / "examples").glob("*.txt"))), bool(m.get("shrunk")), text, explanation,
                 campaign.export_command(f), reason)


# ------------------------------------------------------------ drawing --


def _nice(top: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above `top`."""
    if top <= 0:
        return 1.0
    scale = 10 ** (len(str(int(top))) - 1) if top >= 1 else 1.0
    while scale > top:
        scale /= 10
    return next(m * scale for m in (1, 2, 2.5, 5, 10) if m * scale >= top)


def _short(v: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"


def plot(runs: list[list[dict]], column: str, title: str) -> str:
    """One inline SVG line chart of `column` over fuzzing time (the runs
    end to end, a dashed line where one resumed), or a sentence saying why
    there is none."""
    W, H, left, right, top, bottom = 420, 180, 46, 12, 24, 26
    lines, resumes, offset = [], [], 0.0
    for run in runs:
        if lines:
            resumes.append(offset)
        step = max(1, len(run) // MAX_POINTS)
        kept = run[::step] + ([run[-1]] if (len(run) - 1) % step else [])
        lines.append([(offset + r["elapsed_s"], r.get(column, 0.0)) for r in kept])
        offset += run[-1]["elapsed_s"]
    values = [y for line in lines for _, y in line]
    if not values or not any(values):
        why = "no data in plot_data.csv" if not values else f"no {title} recorded"
        if column == "cov" and values:
            why += " (the Hypothesis engine measures none)"
        return f'<p class="none">{escape(title)}: {escape(why)}</p>'
    xmax, ymax = max(offset, 1.0), _nice(max(values))
    pw, ph = W - left - right, H - top - bottom

    def x(v):
        return f"{left + v / xmax * pw:.1f}"

    def y(v):
        return f"{top + ph - v / ymax * ph:.1f}"

    out = [f'<svg class="plot" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)} over time" '
           f'xmlns="http://www.w3.org/2000/svg">',
           f'<text class="title" x="{left}" y="15">{escape(title)}</text>',
           f'<rect class="frame" x="{left}" y="{top}" width="{pw}" height="{ph}"/>']
    for frac in (0, 0.5, 1):
        out.append(f'<line class="grid" x1="{left}" x2="{left + pw}" y1="{y(ymax * frac)}" y2="{y(ymax * frac)}"/>'
                   f'<text class="tick" x="{left - 4}" y="{float(y(ymax * frac)) + 4:.1f}" '
                   f'text-anchor="end">{_short(ymax * frac)}</text>')
        anchor = ("start", "middle", "end")[int(frac * 2)]
        out.append(f'<text class="tick" x="{x(xmax * frac)}" y="{H - 8}" text-anchor="{anchor}">'
                   f'{campaign._hms(xmax * frac)}</text>')
    for r in resumes:
        out.append(f'<line class="resume" x1="{x(r)}" x2="{x(r)}" y1="{top}" y2="{top + ph}"/>')
    for line in lines:
        points = " ".join(f"{x(a)},{y(b)}" for a, b in line)
        out.append(f'<polyline class="series" points="{points}"/>')
    out.append("</svg>")
    return "\n".join(out)


# ------------------------------------------------------------ the page --


def campaign_facts(stats: dict, runs: list[list[dict]], store: fstore.FindingStore) -> list[tuple[str, str]]:
    """(label, value) rows of the campaign table."""
    facts = []
    if stats:
        elapsed, execs = stats.get("elapsed", 0.0), stats.get("execs", 0)
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stats.get("started", 0)))
        facts += [("engine", f"{stats.get('engine', '?')}" + (f", {stats['jobs']} jobs" if stats.get("jobs", 1) > 1
                                                               else "")),
                  ("implementations", ", ".join(stats.get("implementations") or []) or "-"),
                  ("last run", f"started {started}, {campaign._hms(elapsed)}, {stats.get('status', '?')}"),
                  ("executions", f"{execs:,} ({execs / elapsed if elapsed else 0:,.0f}/s on average, "
                                 f"{stats.get('execs_per_s', 0):,.0f}/s at the end)"),
                  ("coverage", f"cov {stats.get('cov', 0):,}, ft {stats.get('ft', 0):,}"
                   if stats.get("engine") == "atheris" else "not measured (Hypothesis engine)"),
                  ("corpus", f"{stats.get('corpus', 0):,} inputs")]
        if stats.get("harness_crashes"):
            facts.append(("harness crashes", f"{stats['harness_crashes']} (bugs of evdiff, see .evdiff/artifacts)"))
    if len(runs) > 1:
        total = sum(run[-1]["elapsed_s"] for run in runs)
        execs = sum(int(run[-1]["execs"]) for run in runs)
        facts.append(("all runs", f"{len(runs)} runs, {campaign._hms(total)}, {execs:,} executions"))
    facts.append(("findings", f"{len(store.names())} root causes in {store.root}"))
    return facts


#: At most this many of a findings directory's inputs are replayed for the
#: page's "never reached" table (`evdiff coverage` replays them all).
COVERAGE_INPUTS = 400


def unreached(root: Path, names: list[str]) -> dict:
    """What the campaign's inputs never reached (`fuzz.coverage`, over at
    most `COVERAGE_INPUTS` of them, findings' inputs first): the reference's
    rules, and per port the ported KVM functions; with the counts."""
    from fuzz import coverage

    every = coverage.input_files([str(root)])
    files = sorted(every, key=lambda p: p.parent.name == "corpus")[:COVERAGE_INPUTS]
    scenarios = []
    for path in files:
        try:
            scenarios.append(coverage._load(path))
        except EvdiffError:
            continue
    cov = coverage.measure(scenarios, names)
    rules = [r for r in cov.rules if not cov.rule_hits[r]] if oracle.REFERENCE in names else []
    ports = {p.name: sorted(f"{f}: {fn}" for (f, fn) in p.functions if not p.hits[(f, fn)])
             for p in cov.ports.values()}
    return {"inputs": cov.inputs, "of": len(every), "rules": rules,
            "total_rules": len(cov.rules), "ports": ports,
            "total_functions": {p.name: len(p.functions) for p in cov.ports.values()}}


def render(root: str | Path, known: dict[str, str] | None = None) -> str:
    """The page for the findings directory `root`."""
    import jinja2

    root = Path(root)
    if not (root / fstore.STATE_DIR).is_dir():
        why = "no such directory" if not root.is_dir() else f"no {fstore.STATE_DIR}/ in it"
        raise EvdiffError(f"{root}: not a findings directory ({why}; `evdiff fuzz --findings {root}` makes one)")
    known = known or {}
    store = fstore.FindingStore(root)
    stats, runs = read_stats(root), read_plot(root)
    names, missing = _names(stats)
    everything = sorted(store.findings(), key=lambda f: -f.hits)
    causes = [entry(f, names) for f in everything if f.signature not in known]
    listed = [entry(f, names, known[f.signature]) for f in everything if f.signature in known]
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template(TEMPLATE).render(
        root=str(root), generated=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        facts=campaign_facts(stats, runs, store),
        plots=[plot(runs, col, title) for col, title in PLOTS],
        causes=causes, known=listed, names=names, missing=missing, unreached=unreached(root, names))


def write(root: str | Path, out: str | Path | None = None, known: dict[str, str] | None = None) -> Path:
    """Write the page (default: `root/report.html`) atomically; its path."""
    out = Path(out) if out else Path(root) / "report.html"
    page = render(root, known)
    try:
        fstore.write_atomic(out, page)
    except OSError as e:
        raise EvdiffError(f"{out}: {e.strerror}") from None
    return out
