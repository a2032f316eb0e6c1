"""Test doubles: implementations with planted bugs, built on the reference.

Registered in-process with `monkeypatch` (see `registry` in test_oracle.py)
or, for a fuzz target in a subprocess, through
`EVDIFF_EXTRA_IMPLS=prepatch=fakes:DropVectoring` with `tests/` on
PYTHONPATH.  Each bug is planted where a seed bug class would show it.
"""
from __future__ import annotations

from dataclasses import replace

from impls import api
from impls.api import Implementation, Outcome, VmExit


def _reference(scenario) -> Outcome:
    """The reference's outcome without its notes: they name manual rules,
    which a port's notes never do (`fuzz.causes` blames a port's notes)."""
    out = api.load("reference").run(scenario)
    return replace(out.outcomes[0] if isinstance(out, api.Allowed) else out, notes=())


class _Fake(Implementation):
    origin = "tests/fakes.py"
    summary = "test double with a planted bug"
    name = "prepatch"

    def run(self, scenario):
        return self.transform(_reference(scenario), scenario)

    def transform(self, out: Outcome, scenario) -> Outcome:
        return out


class Faithful(_Fake):
    """Agrees with the reference everywhere."""

    name = "postpatch"


class DropVectoring(_Fake):
    """Bug class A: a nested VM exit loses the event being delivered
    (IDT-vectoring info / EXITINTINFO)."""

    def transform(self, out, scenario):
        l1 = tuple((s, replace(o, vectoring=None) if isinstance(o, VmExit) and o.vectoring else o)
                   for s, o in out.l1)
        return replace(out, l1=l1)


class DropVectoringAndShutdown(DropVectoring):
    """Bug classes A and B: also a triple fault never reaches userspace."""

    def transform(self, out, scenario):
        return replace(super().transform(out, scenario), shutdown=None)


class CrashOnMigrate(_Fake):
    """Raises on KVM_GET/SET_VCPU_EVENTS: an implementation's crash is a finding."""

    name = "postpatch"

    def transform(self, out, scenario):
        if any(e.kind == "user.migrate" for e in scenario.events):
            raise KeyError("vcpu->arch.exception")
        return out
