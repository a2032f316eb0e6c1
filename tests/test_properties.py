"""The Hypothesis side: strategies from SPECS, the property (small budget, in
CI), the state machine, and the hypothesis campaign engine.

Under CI=1 Hypothesis loads its `ci` profile (derandomised, no database);
the settings given here only bound the budget and turn the deadline off."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fuzz import binary, findings, properties, stateful, strategies
from fuzz.failures import DivergenceFound
from fuzz.scenario import SPECS, Scenario
from fuzz.text import format_scenario, parse_scenario

ROOT = Path(__file__).resolve().parent.parent
SMALL = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SMALL
@given(strategies.scenarios())
def test_generated_scenarios_round_trip_through_both_forms(scenario):
    assert parse_scenario(format_scenario(scenario)) == scenario
    assert binary.decode(binary.encode(scenario)) == scenario


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.kind)
def test_every_kind_has_a_strategy_and_a_rule(spec):
    @settings(max_examples=5, deadline=None)
    @given(strategies.events_of(spec))
    def kind_is(ev):
        assert ev.kind == spec.kind

    kind_is()
    assert hasattr(stateful.ImplementationsAgree, stateful.rule_name(spec.kind))


def test_the_property_on_every_registered_implementation():
    """CI's property test: a small budget, every registered implementation.
    Known divergences of a port are findings, not failures of this test: it
    checks that the harness runs them all without an error of its own."""
    seen = []

    @SMALL
    @given(strategies.scenarios())
    def run(scenario):
        try:
            properties.check(scenario)
        except DivergenceFound as e:
            seen.append(e.signature)

    run()


def test_the_property_passes_where_implementations_agree(fake_impl, monkeypatch):
    fake_impl("prepatch", lambda o, s: o)
    monkeypatch.setattr(properties, "NAMES", ["reference", "prepatch"])
    properties.implementations_agree()


def test_distinct_signatures_are_distinct_failures(fake_impl):
    """Hypothesis finds, shrinks and reports each planted bug on its own."""
    from fakes import DropVectoringAndShutdown

    bug = DropVectoringAndShutdown()
    fake_impl("prepatch", lambda o, s: bug.transform(o, s))

    # Only the kinds the two planted bugs need (a nested exit during a
    # delivery, a triple fault): the language's other kinds would thin them
    # out of a derandomised run of this size.
    kinds = ("l1.intercept", "l1.vmentry", "l1.stack", "l2.stack", "exception", "delivery_fault", "run")

    @settings(max_examples=1000, deadline=None, database=None, report_multiple_bugs=True, derandomize=True,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink])
    @given(st.builds(Scenario, config=strategies.configs(),
                     events=st.lists(strategies.events(kinds), max_size=8).map(tuple)))
    def prop(scenario):
        properties.check(scenario, ["reference", "prepatch"])

    with pytest.raises(BaseException) as info:
        prop()
    errors = list(info.value.exceptions) if isinstance(info.value, BaseExceptionGroup) else [info.value]
    assert all(isinstance(e, DivergenceFound) for e in errors)
    sigs = {e.signature for e in errors}
    assert len(sigs) == len(errors) >= 2
    for e in errors:  # shrunk: the minimal scenario shows its bug in a few events
        assert len(e.report.scenario.events) <= 4
        assert e.signature in {c.signature for c in e.report.causes}


def test_state_machine_agrees_where_implementations_agree(fake_impl):
    fake_impl("prepatch", lambda o, s: o)

    class Machine(stateful.ImplementationsAgree):
        names = ["reference", "prepatch"]

    machine = Machine
    machine.TestCase.settings = settings(max_examples=10, stateful_step_count=8, deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow])
    machine.TestCase().runTest()


def test_state_machine_finds_a_divergence_and_names_its_steps(fake_impl):
    from fakes import CrashOnMigrate

    fake_impl("postpatch", lambda o, s: CrashOnMigrate().transform(o, s))

    class Machine(stateful.ImplementationsAgree):
        names = ["reference", "postpatch"]

    Machine.TestCase.settings = settings(max_examples=300, stateful_step_count=8, deadline=None, database=None,
                                         derandomize=True, report_multiple_bugs=False,
                                         suppress_health_check=list(HealthCheck))
    with pytest.raises(DivergenceFound) as info:
        Machine.TestCase().runTest()
    assert "crash:KeyError" in info.value.signature
    assert info.value.text.strip().splitlines()[1:] == ["user.migrate"]  # shrunk to the one step


# ------------------------------------------------------------- campaign --


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    env["EVDIFF_EXTRA_IMPLS"] = "prepatch=fakes:DropVectoringAndShutdown,postpatch=fakes:CrashOnMigrate"
    return env


def test_hypothesis_campaign_records_shrunk_findings_and_resumes(tmp_path):
    out = tmp_path / "findings"
    cmd = [sys.executable, "-m", "fuzz.cli", "fuzz", "--engine", "hypothesis",
           "--time", "8", "--findings", str(out), "--quiet"]
    r = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    store = findings.FindingStore(out)
    found = store.findings()
    assert {"l1", "shutdown"} <= {f.meta["field"] for f in found}
    assert any(f.meta.get("shrunk") for f in found)
    assert all(f.meta["engine"] == "hypothesis" for f in found)
    assert (out / ".evdiff" / "hypothesis").is_dir()
    assert f"report: {out / 'report.html'}" in r.stdout
    first_report = (out / "report.html").read_text()
    assert all(f'id="h-{f.path.name}"' in first_report for f in found)
    before = {f.path.name: f.hits for f in found}
    r = subprocess.run(cmd[:-4] + ["3", "--findings", str(out)], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "replayed" in r.stdout and "still diverge" in r.stdout
    after = {f.path.name: f.hits for f in store.findings()}
    assert all(after[name] > hits for name, hits in before.items())  # replayed first: each hit again
    again = (out / "report.html").read_text()  # refreshed by the resumed run: every finding, both runs
    assert again != first_report and all(f'id="h-{name}"' in again for name in after) and "2 runs" in again
