"""Side-by-side traces of one scenario, for people.

One row a scenario step: the event, then for each implementation what L1 and
L2 observed at that step, and below it (`·`) the implementation's notes: the
SDM/APM rule the reference applied, the KVM function a port went through.
Rows where an implementation differs from the reference are marked `!!`.  Then the final state, shutdown, alarms, the
root causes (`fuzz.causes`) with their signatures, blamed KVM branch and
verdicts, and each diverging field.
"""
from __future__ import annotations

import io
from html import escape

from fuzz.oracle import REFERENCE, Crash, Report, _closest
from fuzz.text import format_event, format_header
from impls.api import Allowed, Outcome, matches

MARK = "!!"
#: The row of the final-state fields on which every implementation agrees.
SAME = "final, the same in all"


def _at(out: Outcome, step: int) -> list[str]:
    cells = [f"L1: {o}" if not str(o).startswith("L1 ") else str(o) for s, o in out.l1 if s == step]
    cells += [str(o) for s, o in out.l2 if s == step]
    if out.shutdown == step:
        cells.append("SHUTDOWN to userspace")
    cells += [f"· {text}" for s, text in out.notes if s == step]
    return cells


def _pick(report: Report) -> dict[str, Outcome | Crash]:
    """One outcome per implementation; for the reference, the allowed
    outcome closest to the first other implementation's."""
    chosen: dict[str, Outcome | Crash] = {}
    others = [r for n, r in report.results.items() if n != REFERENCE and isinstance(r, Outcome)]
    for name, res in report.results.items():
        if isinstance(res, Allowed):
            res = _closest(res, others[0], report.scenario.config.vendor)[0] if others else res.outcomes[0]
        chosen[name] = res
    return chosen


def rows(report: Report) -> tuple[list[str], list[list[str]]]:
    chosen = _pick(report)
    names = list(chosen)
    header = ["", "step", "event"] + names
    events = [format_event(e) for e in report.scenario.events] + ["(final run)"]
    table = []
    ref = chosen.get(REFERENCE)
    for step, text in enumerate(events):
        cells = {}
        for n, res in chosen.items():
            cells[n] = "crashed" if isinstance(res, Crash) else "\n".join(_at(res, step))
        if not any(cells.values()):
            table.append(["", str(step), text] + ["" for _ in names])
            continue
        differs = isinstance(ref, Outcome) and any(
            isinstance(r, Outcome) and not _same_step(ref, r, step) for r in chosen.values()
        )
        table.append([MARK if differs else "", str(step), text] + [cells[n] for n in names])
    same = []
    for fname in ("level", "nmi_pending", "irq_pending", "nmi_blocked", "interrupt_shadow", "interrupts_enabled",
                  "cr2"):
        vals = {n: (_final(getattr(r.final, fname)) if isinstance(r, Outcome) and r.final else "-")
                for n, r in chosen.items()}
        if len(set(vals.values())) > 1:
            table.append([MARK, "", f"final {fname}"] + [vals[n] for n in names])
        else:
            same.append(f"{fname}={next(iter(vals.values()))}")
    if same:
        table.append(["", "", SAME] + [", ".join(same)] + ["" for _ in names[1:]])
    extra = {n: "; ".join(r.alarms) + (f" livelock: {r.livelock}" if r.livelock else "") if isinstance(r, Outcome)
             else f"{r.type} at {r.where}: {r.message}" for n, r in chosen.items()}
    if any(extra.values()):
        table.append([MARK, "", "alarms / crash"] + [extra[n] for n in names])
    return header, table


def _final(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return ",".join(f"{v:#x}" for v in value) or "none"
    if isinstance(value, int) and value > 9:
        return f"{value:#x}"
    return str(value)


def _same_step(ref: Outcome, other: Outcome, step: int) -> bool:
    def at(o: Outcome, trace: str):
        return tuple(x for s, x in getattr(o, trace) if s == step)

    return all(matches(at(ref, t), at(other, t)) for t in ("l1", "l2")) and (
        (ref.shutdown == step) == (other.shutdown == step)
    )


FORMATS = ("text", "md", "html")


def explain(report: Report, fmt: str = "text") -> str:
    """The side-by-side table and what it shows, as text (a terminal), `md`
    (a mail, a bug report) or `html` (a fragment: a `<table
    class="explain">` and a `<pre>` of the causes; `evdiff report` embeds
    it, a mail client shows it as it is)."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: one of {', '.join(FORMATS)}")
    header, table = rows(report)
    sc = report.scenario
    if fmt == "html":
        return _html(format_header(sc.config), header, table, "\n".join(_findings(report, False)).strip())
    lines = []
    if fmt == "md":
        lines.append(f"**Scenario** `{format_header(sc.config)}`\n")
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for r in table:
            lines.append("| " + " | ".join(c.replace("\n", "<br>").replace("|", "\\|") for c in r) + " |")
    else:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=format_header(sc.config), show_lines=True)
        for h in header:
            t.add_column(h, overflow="fold")
        for r in table:
            t.add_row(*r)
        buf = io.StringIO()
        Console(file=buf, width=max(120, 28 * len(header)), color_system=None).print(t)
        lines.append(buf.getvalue().rstrip())
    return "\n".join(lines + _findings(report, fmt == "md"))


def _findings(report: Report, markdown: bool) -> list[str]:
    """What follows the table: the reference's choices, the root causes,
    every diverging field."""
    lines = []
    ref = report.results.get(REFERENCE)
    if isinstance(ref, Allowed):
        n = len(ref.outcomes)
        some = "" if ref.complete else "at least "  # too many choices to explore them all
        lines.append(f"\nThe manuals allow {some}{n} outcome{'s' * (n != 1)} here "
                     f"(choices: {'; '.join(ref.choices)}); "
                     "the reference column shows the one closest to the first implementation.")
    if not report.divergences:
        lines.append("\nAll implementations agree.")
    for c in report.causes:
        verdicts = ", ".join(f"{p}: {v}" for p, v in c.verdicts.items())
        lines.append(f"\n{'- ' if markdown else ''}ROOT CAUSE in {', '.join(c.impls)}"
                     + (f" at step {c.step}" if c.step is not None else ""))
        lines.append(f"  signature: {c.signature}")
        lines.append(f"  blamed: {c.function}" + (f" ({c.note})" if c.note else ""))
        if verdicts:
            lines.append(f"  verdicts: {verdicts}")
    for d in report.divergences:
        verdicts = ", ".join(f"{p}: {v}" for p, v in d.verdicts.items())
        lines.append(f"\n{'- ' if markdown else ''}DIVERGENCE {d.field}" + (f" at step {d.step}" if d.step is not None else ""))
        lines.append(f"  expected: {d.expected}")
        for n, g in d.got.items():
            lines.append(f"  {n}: {g}")
        if verdicts:
            lines.append(f"  verdicts: {verdicts}")
    return lines


def _html(title: str, header: list[str], table: list[list[str]], tail: str) -> str:
    """The table as HTML: a diverging row has class `diverges`, a port's
    notes (`· ...`) are `<span class="note">`."""
    def cell(text: str) -> str:
        return "<br>".join(f'<span class="note">{escape(line)}</span>' if line.startswith("· ") else escape(line)
                           for line in text.split("\n"))

    out = [f'<table class="explain">\n<caption>{escape(title)}</caption>',
           "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr></thead>", "<tbody>"]
    for r in table:
        cls = ' class="diverges"' if r[0] == MARK else ""
        cells = [f"<td>{cell(c)}</td>" for c in r]
        if r[2] == SAME:  # one value across the implementations' columns
            cells[3:] = [f'<td colspan="{len(r) - 3}">{cell(r[3])}</td>']
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    out.append("</tbody>\n</table>")
    if tail:
        out.append(f'<pre class="causes">{escape(tail)}</pre>')
    return "\n".join(out)
