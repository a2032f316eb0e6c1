"""The differential oracle: run every implementation, compare, name divergences.

Each implementation's outcome is compared with the reference field by field
(`Outcome.FIELDS`, `final` split into its parts).  Where the reference allows
several outcomes, an implementation is compared with the allowed outcome it
is closest to, and agrees if it equals any of them; `Undefined` parts of the
reference match anything (each use cites its rule).  Where the reference
explored only part of its choices (`Allowed.complete` false: too many), only
KVM's alarms and livelocks are judged: an outcome outside the explored part
may be an allowed one, and a false report costs a reader more than a missed
one (the fuzzer meets the same bug in smaller scenarios).  There is no
other masking.

A divergence is named by a **signature** that stays the same across runs and
across scenarios showing the same bug: the vendor, the field, and for each
implementation that differs the *shape* of its value at the first difference
(`abstract`: the kinds of events involved -- NMI, ext-int, INT n, #DF, #PF,
other exceptions -- without vectors, error codes or addresses),
with the reference's shape.  A crash of an implementation is a divergence of its
own, named by exception type and the line that raised it.
"""
from __future__ import annotations

import re
import traceback
from dataclasses import dataclass, field, fields
from pathlib import Path

from impls import api
from impls.api import Allowed, Delivered, EntryFailed, Outcome, Reset, Undefined, VcpuEvents, VmExit, matches
from impls.arch import Ev, EvType

REFERENCE = "reference"
_ROOT = str(Path(__file__).resolve().parent.parent)


@dataclass(frozen=True)
class Crash:
    """An implementation raised instead of returning an outcome."""

    type: str
    where: str  # innermost file:line inside this project
    message: str

    def to_json(self) -> dict:
        return {"crash": self.type, "where": self.where, "message": self.message}


Result = Outcome | Allowed | Crash


@dataclass(frozen=True)
class Divergence:
    field: str
    impls: tuple[str, ...]  # implementations that differ from the reference here
    signature: str
    step: int | None  # first diverging step, where the field is a trace
    expected: str  # the reference's value (shape), for people
    got: dict[str, str]  # each differing implementation's value (shape)
    verdicts: dict[str, str] = field(default_factory=dict)  # "prepatch->postpatch": "fixed"
    #: implementation -> (its own first diverging step, expected, got), the
    #: last two as signatures see them (`abstract`); what `causes` reads
    per_impl: dict[str, tuple] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict:
        return {
            "field": self.field,
            "impls": list(self.impls),
            "signature": self.signature,
            "step": self.step,
            "expected": self.expected,
            "got": self.got,
            "verdicts": self.verdicts,
        }


@dataclass
class Report:
    scenario: object
    results: dict[str, Result]
    divergences: list[Divergence]
    _causes: list | None = field(default=None, repr=False, compare=False)

    @property
    def agree(self) -> bool:
        return not self.divergences

    @property
    def primary(self) -> Divergence | None:
        """The divergence that names this scenario's bug (`_significance`),
        the others are usually its consequences."""
        return self.divergences[0] if self.divergences else None

    @property
    def causes(self) -> list:
        """What each differing implementation did wrong first, grouped
        (`fuzz.causes`): what findings are filed under."""
        if self._causes is None:
            from fuzz.causes import causes

            self._causes = causes(self)
        return self._causes

    def to_json(self) -> dict:
        def res(r):
            if isinstance(r, Allowed):
                return {"allowed": [o.to_json() for o in r.outcomes], "choices": list(r.choices),
                        "complete": r.complete}
            return r.to_json()

        return {
            "agree": self.agree,
            "outcomes": {n: res(r) for n, r in self.results.items()},
            "divergences": [d.to_json() for d in self.divergences],
        }


def run_one(name: str, scenario) -> Result:
    """Run one implementation; an exception becomes a `Crash`."""
    try:
        return api.load(name).run(scenario)
    except Exception as e:  # noqa: BLE001 -- an implementation's crash is a finding
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename.startswith(_ROOT)]
        where = f"{Path(frames[-1].filename).relative_to(_ROOT)}:{frames[-1].lineno}" if frames else "?"
        return Crash(type(e).__name__, where, str(e))


# ------------------------------------------------------------- shapes --


def shape(obs) -> str:
    """An observation without its error codes and addresses."""
    if obs is None:
        return "nothing"
    if isinstance(obs, Delivered):
        return str(Delivered(obs.level, obs.event.without_error_code(), obs.ret))
    if isinstance(obs, VmExit):
        vec = obs.vectoring
        vec_text = "none" if vec is None else str(vec.without_error_code() if isinstance(vec, Ev) else vec)
        head = VmExit(obs.reason, obs.info.without_error_code() if obs.info is not None else None,
                      ret=obs.ret, length=obs.length)
        return f"{head}, IDT-vectoring: {vec_text}" + (", activity HLT" if obs.halted else "")
    if isinstance(obs, EntryFailed):
        return str(obs)
    return str(obs)


def _field_values(out: Outcome) -> dict[str, object]:
    vals: dict[str, object] = {f: getattr(out, f) for f in Outcome.FIELDS if f != "final"}
    if out.final is not None:
        for f in fields(out.final):
            vals[f"final.{f.name}"] = getattr(out.final, f.name)
    return vals


def _first_diff(expected: tuple, actual: tuple) -> tuple:
    """First position where two traces differ: (step, expected, got), each
    observation (or None for a missing one)."""
    for i in range(max(len(expected), len(actual))):
        e = expected[i] if i < len(expected) else None
        a = actual[i] if i < len(actual) else None
        if e is None or a is None or not matches(e, a):
            step = (e or a)[0]
            return step, e and e[1], a and a[1]
    return None, None, None


#: Exceptions named in signatures: #DF and #PF, whose merging rules are the
#: subject here; every other exception is "exception" (which one the fuzzer
#: happened to pick does not make another bug).
_NAMED = {8: "#DF", 14: "#PF"}


def _class(ev) -> str:
    """An event as signatures see it: interrupts without their vector,
    exceptions by name (_NAMED) or by class (SDM Table 6-4)."""
    if ev is None:
        return "none"
    if isinstance(ev, Undefined):
        return "undefined"
    if ev.type is EvType.NMI:
        return "NMI"
    if ev.type is EvType.EXT_INTR:
        return "ext-int"
    if ev.type is EvType.SOFT_INT:
        return "INT n"
    if ev.type in (EvType.SOFT_EXCEPTION, EvType.PRIV_SOFT_EXCEPTION):
        return "soft exception"  # INT3 / INTO / INT1: VMX type 6 / 5, not 3
    return _NAMED.get(ev.vector, "exception")


def _ret_class(ret) -> str:
    """A return address / saved RIP in a signature: +0 (not shown), after
    the instruction (`+N`) or before it (`-N`), without the length, which
    the fuzzer's choice of `insn_len=` or a stale next_rip decides."""
    if isinstance(ret, Undefined) or not ret:
        return ""
    return " ret=+N" if ret > 0 else " ret=-N"


def abstract(obs) -> str:
    """The shape of an observation in a signature: no vectors of interrupts,
    no error codes or addresses, exceptions by `_class`."""
    if obs is None:
        return "nothing"
    if isinstance(obs, Delivered):
        return f"L{obs.level} handles {_class(obs.event)}{_ret_class(obs.ret)}"
    if isinstance(obs, VmExit):
        reason = obs.reason.split(" ")[0]  # SVM "EXCP #PF": the vector is in info
        info = f" {_class(obs.info)}" if obs.info is not None else ""
        length = " len=N" if obs.length is not None else ""
        halted = ", activity HLT" if obs.halted else ""  # the activity state saved (VMX)
        return f"EXIT {reason}{info}{_ret_class(obs.ret)}{length}, IDT-vectoring: {_class(obs.vectoring)}{halted}"
    if isinstance(obs, VcpuEvents):
        return obs.describe(values=False)
    return str(obs)


def _describe(name: str, exp, act) -> tuple:
    """(step, expected, got, expected in a signature, got in a signature)."""
    if name in ("l1", "l2"):
        step, e, a = _first_diff(exp, act)
        return step, shape(e), shape(a), abstract(e), abstract(a)
    if name == "alarms":
        text = "; ".join(act)
        return None, "no alarm", text, "no alarm", re.sub(r"0x[0-9a-fA-F]+|\b\d+\b", "N", text)
    if name == "shutdown":
        step = exp if exp is not None else act
        e, a = ("no shutdown" if exp is None else "shutdown"), ("no shutdown" if act is None else "shutdown")
        return step, e, a, e, a
    if name.startswith("final.") and isinstance(act, bool):
        return None, str(exp), str(act), str(exp), str(act)
    return None, str(exp), str(act), "", ""


def _truncate(exp: dict, act: dict, step: int) -> None:
    """Keep only what happened before `step` (Outcome.undefined_from): trace
    entries, a shutdown; the final state is not compared.  Alarms and
    livelocks stay: KVM must not warn or hang whatever userspace does."""
    for vals in (exp, act):
        for f in ("l1", "l2"):
            vals[f] = tuple(x for x in vals[f] if x[0] < step)
        if vals["shutdown"] is not None and vals["shutdown"] >= step:
            vals["shutdown"] = None
    _drop_final(exp, act)


def _drop_final(exp: dict, act: dict) -> None:
    """Leave the final state out of the comparison (past `undefined_from`,
    and where both shut down on SVM: see `divergences`)."""
    for vals in (exp, act):
        for k in [k for k in vals if k.startswith("final.")]:
            del vals[k]


def _drop_wiped_deliveries(vals: dict) -> None:
    """Leave out the deliveries an INIT reset wipes before their handler's
    first instruction: the reset (SDM 9.1) reloads everything a delivery
    changes that a guest could read afterwards (RIP, CS, RFLAGS, the
    interruptibility state; the frame pushed to memory, which no outcome
    records, aside), so no guest can tell whether the handler was reached.
    Those are the `Delivered` observations that come last before the
    `Reset` in the trace of the level it found running, at its step: events
    at one step are one instruction boundary and then, after the deliveries,
    the instruction, so none of the handler's instructions ran between."""
    reset = next((obs for _, obs in vals["l1"][-1:] if isinstance(obs, Reset)), None)
    if reset is None:
        return
    step = vals["l1"][-1][0]
    name = "l1" if reset.level == 1 else "l2"
    trace = vals[name][:-1] if name == "l1" else vals[name]
    end = len(trace)
    while end and trace[end - 1][0] == step and isinstance(trace[end - 1][1], Delivered):
        end -= 1
    vals[name] = trace[:end] + (vals[name][-1:] if name == "l1" else ())


def _compared(expected: Outcome, actual: Outcome, vendor: str) -> tuple[dict, dict]:
    """The field values the oracle compares, after its rules: only what came
    before `undefined_from`, no deliveries an INIT reset wiped, and on SVM no
    final state where both shut down."""
    exp_vals, act_vals = _field_values(expected), _field_values(actual)
    if expected.undefined_from is not None:
        _truncate(exp_vals, act_vals, expected.undefined_from)
    for vals in (exp_vals, act_vals):
        _drop_wiped_deliveries(vals)
    if vendor == "svm" and expected.shutdown is not None and actual.shutdown is not None:
        # L0 sees its guest's shutdown through the shutdown intercept,
        # after which the VMCB state is undefined (APM 15.14.3): so is the
        # state a VMM reads.  The shutdown and all before it are compared;
        # on VMX a triple-fault exit saves guest state (SDM 27.3), so the
        # final state is compared there.
        _drop_final(exp_vals, act_vals)
    return exp_vals, act_vals


def verdict(before_differs: bool, after_differs: bool) -> str:
    """A before/after pair's verdict where either side differs."""
    if before_differs and not after_differs:
        return "fixed"
    return "regression" if after_differs and not before_differs else "still-wrong"


def _closest(allowed: Allowed | Outcome, out: Outcome, vendor: str) -> tuple[Outcome, dict, dict]:
    """The allowed outcome that agrees with `out`'s traces for the most
    steps, so that a late divergence is not filed at an earlier step where
    the manuals allowed what `out` did (the choice `out` took); among those,
    the one with the fewest differing fields, counted as the comparison
    counts them (`_compared`: what comes after an outcome's `undefined_from`
    does not count against it).  Fewest fields first filed divergences at
    the step of an earlier choice the port had followed whenever the other
    branch happened to end like the port (re-filing 3,000 campaign inputs:
    118 findings, 48 without a note; agreeing longest first: 97 and 28).
    Returns it with its compared values (`_compared`), computed once."""
    cands = allowed.outcomes if isinstance(allowed, Allowed) else (allowed,)
    best = None
    for r in cands:
        e, a = _compared(r, out, vendor)
        if len(cands) == 1:
            return r, e, a  # one candidate: nothing to rank
        ndiff = sum(not matches(e.get(k), a.get(k)) for k in e.keys() | a.keys())
        steps = [_first_diff(e[f], a[f])[0] for f in ("l1", "l2") if f in e and f in a]
        rank = (-min((s for s in steps if s is not None), default=1 << 30), ndiff)
        if best is None or rank < best[0]:
            best = (rank, r, e, a)
    return best[1:]


def compare(scenario, names: list[str] | None = None) -> Report:
    names = names or api.names()
    results = {n: run_one(n, scenario) for n in names}
    return Report(scenario, results, divergences(scenario, results))


#: Fields judged even where the reference's answer is incomplete.
_ALWAYS_JUDGED = ("alarms", "livelock")


def divergences(scenario, results: dict[str, Result]) -> list[Divergence]:
    vendor = scenario.config.vendor
    ref = results.get(REFERENCE)
    # field -> impl -> (step, expected shape, got shape)
    found: dict[str, dict[str, tuple]] = {}
    for name, res in results.items():
        if isinstance(res, Crash):
            found.setdefault(f"crash:{res.type}@{res.where}", {})[name] = (None, "no crash", res.message, "", "")
            continue
        if name == REFERENCE or ref is None or isinstance(ref, Crash):
            continue
        if res == ref or (isinstance(ref, Allowed) and res in ref.outcomes):
            continue  # equal to an allowed outcome (notes aside): no field can differ
        _, exp_vals, act_vals = _closest(ref, res, vendor)
        if isinstance(ref, Allowed) and not ref.complete:
            # The reference explored only part of what the manuals allow
            # (too many choices): an outcome outside that part may be an
            # allowed one, so only KVM's own alarms and livelocks, which no
            # allowed outcome has, are judged.
            exp_vals = {k: v for k, v in exp_vals.items() if k in _ALWAYS_JUDGED}
            act_vals = {k: v for k, v in act_vals.items() if k in _ALWAYS_JUDGED}
        for fname in exp_vals.keys() | act_vals.keys():
            e, a = exp_vals.get(fname), act_vals.get(fname)
            if not matches(e, a):
                found.setdefault(fname, {})[name] = _describe(fname, e, a)

    out: list[Divergence] = []
    for fname in sorted(found):
        per_impl = found[fname]
        differing = tuple(sorted(per_impl))
        steps = [v[0] for v in per_impl.values() if v[0] is not None]
        step = min(steps) if steps else None
        expected = next(iter(per_impl.values()))[1]
        got = {n: v[2] for n, v in sorted(per_impl.items())}
        if fname in ("l1", "l2", "shutdown", "alarms"):
            shapes = " | ".join(f"{n}: {per_impl[n][4]}" for n in differing)
            sig = f"{vendor} {fname} [{shapes}] expected: {next(iter(per_impl.values()))[3]}"
        else:  # crashes name their place; final-state values and livelocks vary, the field names the bug
            sig = f"{vendor} {fname} [{' '.join(differing)}]"
        verdicts = {}
        for before, after in api.PAIRS:
            if before in results and after in results:
                b, a = before in per_impl, after in per_impl
                if b or a:
                    verdicts[f"{before}->{after}"] = verdict(b, a)
        detail = {n: (v[0], v[3], v[4]) for n, v in sorted(per_impl.items())}
        out.append(Divergence(fname, differing, sig, step, expected, got, verdicts, detail))
    out.sort(key=_significance)
    return out


def _significance(d: Divergence) -> tuple:
    """Most significant first: a crash, then the earliest diverging trace
    entry (L1's before L2's at the same step), a shutdown, a livelock, an
    alarm, and last the final state, which is usually a consequence of an
    earlier divergence.  `Report.primary` is the first."""
    rank = {"l1": 1, "l2": 1, "shutdown": 2, "livelock": 3, "alarms": 4}
    if d.field.startswith("crash:"):
        return (0, 0, d.field)
    return (rank.get(d.field, 5), d.step if d.step is not None else 1 << 30, d.field)
