"""A Hypothesis state machine that drives every implementation step by step.

`ImplementationsAgree` starts from a configuration (`configure`) and then
applies one event per rule; each rule is named after its event kind
(`l1.vmentry` is the rule `l1_vmentry`, with the kind's parameters as its
arguments), so Hypothesis's printed steps read line for line like the
scenario's text.  After every step the oracle compares all implementations on
the scenario so far: the implementations' interface runs a whole scenario,
so "step by step" means every prefix, which is what a bug that appears only
after step k and disappears again at step k+1 needs.

The rules are generated from `SPECS`: a new event kind gets its rule without
touching this module.  Use it from pytest:

    TestAgree = ImplementationsAgree.TestCase
    TestAgree.settings = settings(max_examples=50, stateful_step_count=12, deadline=None)

A failure raises `DivergenceFound` (from frames that follow its signature, so
distinct divergences are distinct failures) whose message carries the
scenario's text, and `note()`s that text at each step.
"""
from __future__ import annotations

from hypothesis import note
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from fuzz import oracle
from fuzz.failures import raise_divergence
from fuzz.scenario import SPECS, Scenario
from fuzz.strategies import arguments, configs, make_event
from fuzz.text import format_scenario


def rule_name(kind: str) -> str:
    """`l1.vmentry` -> `l1_vmentry`."""
    return kind.replace(".", "_")


def _make_rule(spec):
    def step(self, **kwargs):
        self.events.append(make_event(spec, kwargs))

    step.__name__ = step.__qualname__ = rule_name(spec.kind)
    step.__doc__ = spec.doc
    return rule(**arguments(spec))(step)


class _Base(RuleBasedStateMachine):
    #: Implementations to compare (None: every registered one).
    names: list[str] | None = None

    def __init__(self):
        super().__init__()
        self.config = None
        self.events: list = []

    @initialize(config=configs())
    def configure(self, config):
        self.config = config

    def scenario(self) -> Scenario:
        return Scenario(self.config, tuple(self.events))

    @invariant()
    def implementations_agree(self):
        if self.config is None:
            return
        report = oracle.compare(self.scenario(), self.names)
        if report.divergences:
            note(format_scenario(report.scenario, with_description=False))
            raise_divergence(report)


ImplementationsAgree = type("ImplementationsAgree", (_Base,), {
    "__doc__": "Apply events one rule at a time; all implementations agree after each.",
    "__module__": __name__,
    **{rule_name(spec.kind): _make_rule(spec) for spec in SPECS},
})
