"""Root causes: what a morning's list is made of.

The oracle's divergences are per *field*, and join every implementation that
differs there (`oracle.Divergence`).  Two known bugs of two ports that meet in
one scenario would make one "new" divergence, and one bug shows under many
fields (a lost exit also changes the final level).  A **cause** is what one
implementation did wrong first:

* the implementation's own most significant divergence (`oracle._significance`
  order: a crash, its earliest diverging trace entry, a shutdown, a livelock,
  an alarm, the final state); the rest of what it does differently is most
  often a consequence and is not a cause of its own;
* the **blamed note**: the first note the port made at its diverging step
  (`Outcome.notes`: "kvm_multiple_exception: vector 14 replaces vector 13
  (injected)"), else its last note before that step -- a deviation set up
  earlier, such as a KVM_SET_VCPU_EVENTS that drops an exception, shows at a
  later step.  Ports note the branch a KVM function took where it queues,
  merges, drops or injects an event, so the note without its numbers names
  a branch of one function.

A cause's `signature` is the vendor and the blamed note's branch; where the
implementation made no note, the vendor, the field and the shapes of what it
got and what the reference expected (`oracle.abstract`: without vectors,
error codes or addresses).  It leaves the implementation
out: implementations that share it in one scenario are one `Cause`, and a
finding (`fuzz.findings`) gathers every implementation seen with it.  A
scenario that shows two causes is recorded under both, never as a combined
one.  Two refinements: where an implementation shut down and the
reference did not, the blamed note is the one that requested the triple
fault (`_triple_fault_note`), not an earlier link of the chain that led to
it; and ports put what a branch handled this time in a trailing `[...]`,
which `branch` leaves out.

Why the branch and not the branch and the shape: one wrong branch shows
under many shapes (an exception dropped by the April repost's
KVM_SET_VCPU_EVENTS is "nothing", or an NMI, an interrupt, an SMI, a triple
fault taking its place).  Measured on the 1,922 inputs of a 60 s campaign
from the seeds: 356 primary signatures (the old key); 490 keys with the
function, field and shapes; 233 with the branch and the kind of the expected
observation (a VM exit, a delivery, nothing ...); 102 as here; 81 with the
no-note causes keyed on kinds instead of shapes, which made one key of
unrelated bugs ("nothing | expected: a delivery").  The
price: two causes that end in the same branch of one function share a
finding (5.11's kvm_multiple_exception turns both a #PF on an injected #DF in
L2 and a benign exception on a #DF into KVM_REQ_TRIPLE_FAULT); the finding
lists every implementation and keeps up to `MAX_EXAMPLES` inputs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from fuzz.oracle import REFERENCE, Report, verdict
from impls import api
from impls.api import Outcome

#: The function a note names: "kvm_vcpu_reset(init_event=True): ..." -> kvm_vcpu_reset.
_FUNCTION = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"0x[0-9a-fA-F]+|\d+")
_DETAIL = re.compile(r"\s*\[[^\]]*\]$")
#: Blamed where an implementation made no note up to its diverging step.
UNATTRIBUTED = "(no note)"


@dataclass(frozen=True)
class Cause:
    vendor: str
    field: str  # Outcome field of the divergence ("l1", "shutdown", "final.level", "crash:...")
    function: str  # the blamed KVM function (a crash: its raising line)
    note: str | None  # the blamed note, numbers made N (`branch`); None: no note
    shape: str  # "got | expected", as `oracle.abstract` gives them
    impls: tuple[str, ...]  # implementations of this scenario with this cause
    step: int | None  # first diverging step among them
    verdicts: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    got: dict[str, str] = field(default_factory=dict, compare=False, hash=False)  # impl -> shape
    expected: str = ""

    @property
    def signature(self) -> str:
        """The key a finding is filed under: stable across runs and
        scenarios, without the implementations (`module docstring`)."""
        if self.field.startswith("crash:"):
            return f"{self.vendor} {self.field}"
        if self.note is not None:
            return f"{self.vendor} {self.note}"
        return f"{self.vendor} {self.field} {UNATTRIBUTED}: {self.shape}"


def branch(text: str) -> str:
    """A note without its numbers (vectors, levels, addresses) and without
    the details a port puts in a trailing `[...]` (which event the branch
    handled this time): the branch of the function that made it."""
    return _NUMBER.sub("N", _DETAIL.sub("", text))


#: Notes that record progress, not a choice: a pending exception with nothing
#: to merge with becomes the injected one; a pending request cancels the
#: entry.  They come first in a chain of steps (#PF, then #DF, then a triple
#: fault) and would name the chain instead of its deciding branch, so the
#: blame passes over them where another note was made at the step.
PROGRESS = ("kvm_deliver_pending_exception: vector N committed as the injected exception",
            "vcpu_enter_guest: a request is pending after injection: entry cancelled")


def blame(notes: tuple[tuple[int, str], ...], step: int | None) -> str | None:
    """The note behind a divergence at `step` (None: at the end): the first
    note made at that step that is not `PROGRESS`, else the last one before
    it that is not, else the first made at it; None without one.  (A
    cancelled entry at the diverging step follows from what an earlier step
    decided, e.g. a HLT that left the vCPU runnable.)"""
    at = [t for s, t in notes if s == step] if step is not None else []
    decided = next((t for t in at if branch(t) not in PROGRESS), None)
    if decided is not None:
        return decided
    before = [t for s, t in notes if step is None or s < step]
    fallback = at[0] if at else (before[-1] if before else None)
    return next((t for t in reversed(before) if branch(t) not in PROGRESS), fallback)


def function_of(note: str | None) -> str:
    m = _FUNCTION.match(note or "")
    return m.group(0) if m else UNATTRIBUTED


def first_deviations(report: Report) -> dict[str, tuple]:
    """Each differing implementation's most significant divergence:
    impl -> (divergence, its own step, expected, got)."""
    first: dict[str, tuple] = {}
    for d in report.divergences:  # most significant first
        for name in d.impls:
            if name not in first:
                first[name] = (d, *d.per_impl.get(name, (d.step, "", "")))
    return first


def symptom(report: Report, impl: str) -> tuple | None:
    """How `impl` deviates first: (field, got, expected), the last two as
    signatures see them; None where it agrees."""
    first = first_deviations(report).get(impl)
    return None if first is None else (first[0].field, first[3], first[2])


def _shut_down_wrongly(report: Report, name: str) -> bool:
    """Whether `name` shut down where the reference did not."""
    return any(d.field == "shutdown" and name in d.impls and d.per_impl.get(name, (0, "", ""))[2] == "shutdown"
               for d in report.divergences)


def _triple_fault_note(notes, step) -> str | None:
    """The note of the branch that requested the triple fault, at `step`
    or before: where an implementation shut down wrongly, that branch is
    what a reader wants blamed, not an earlier step of the chain that led
    to it (the #PF that became a #DF, the event it replaced)."""
    cands = [(s, t) for s, t in notes if (step is None or s <= step) and "TRIPLE_FAULT" in t]
    if not cands:
        return None
    last = cands[-1][0]
    return next(t for s, t in cands if s == last)  # the request, before what consumed it


def causes(report: Report) -> list[Cause]:
    """One cause per distinct signature among the implementations that
    differ, the most significant first."""
    vendor = report.scenario.config.vendor
    first = first_deviations(report)
    verdicts = scenario_verdicts(report, set(first))
    grouped: dict[str, Cause] = {}
    for name, (d, step, expected, got) in first.items():
        if d.field.startswith("crash:"):
            note, function = None, d.field.split("@", 1)[1]
        else:
            res = report.results.get(name)
            text = blame(res.notes, step) if isinstance(res, Outcome) and name != REFERENCE else None
            if text is not None and _shut_down_wrongly(report, name):
                text = _triple_fault_note(res.notes, step) or text
            note, function = (branch(text) if text else None), function_of(text)
        shape = f"{got} | expected: {expected}" if got or expected else ""
        cause = Cause(vendor, d.field, function, note, shape,
                      (name,), step, {}, {name: d.got.get(name, got)}, d.expected)
        prev = grouped.get(cause.signature)
        if prev is None:
            grouped[cause.signature] = cause
        else:
            steps = [s for s in (prev.step, step) if s is not None]
            grouped[cause.signature] = replace(prev, impls=tuple(sorted(prev.impls + (name,))),
                                               step=min(steps) if steps else None, got={**prev.got, **cause.got})
    out = []
    for c in grouped.values():
        mine = {p: v for p, v in verdicts.items() if set(p.split("->")) & set(c.impls)}
        out.append(replace(c, verdicts=mine))
    return out


def scenario_verdicts(report: Report, differing: set[str]) -> dict[str, str]:
    """For each before/after pair (`api.PAIRS`) run in this scenario where
    either side differs from the reference: fixed, regression or
    still-wrong.  A scenario is wrong for an implementation if it differs
    anywhere; its causes then say how."""
    out = {}
    for before, after in api.PAIRS:
        if before in report.results and after in report.results:
            b, a = before in differing, after in differing
            if b or a:
                out[f"{before}->{after}"] = verdict(b, a)
    return out
