"""The oracle: comparison against allowed outcomes, signatures, verdicts, crashes."""
import pytest

from fuzz import oracle
from fuzz.text import parse_scenario
from impls import api
from impls.api import Implementation, Outcome


def _fake(name, transform):
    class Fake(Implementation):
        origin = "test"
        summary = "test double"

        def run(self, scenario):
            out = api.load("reference").run(scenario)
            out = out.outcomes[0] if isinstance(out, api.Allowed) else out
            return transform(out, scenario)

    Fake.name = name
    return Fake


@pytest.fixture
def registry(monkeypatch):
    """Register test doubles as prepatch/postpatch (and restore after)."""
    fakes = {}

    def register(name, transform):
        cls = _fake(name, transform)
        fakes[name] = cls
        monkeypatch.setattr(__import__(__name__), f"_cls_{name}", cls, raising=False)
        monkeypatch.setitem(api.IMPLEMENTATIONS, name, f"{__name__}:_cls_{name}")
        monkeypatch.delitem(api._loaded, name, raising=False)

    yield register
    for name in fakes:
        api._loaded.pop(name, None)


SCENARIO = parse_scenario(
    "evdiff 1 vendor=vmx ept=off\nl1.intercept exceptions=#PF\nl2.stack #PF\nl1.vmentry inject=intr(0x20)\n")


def _drop_vectoring(out, scenario):
    step, exit_ = out.l1[0]
    return Outcome(((step, api.VmExit(exit_.reason, exit_.info, None, exit_.address)),), out.l2, out.shutdown,
                   out.final, out.alarms, out.livelock)


def test_agreeing_implementations_give_no_divergence(registry):
    registry("prepatch", lambda o, s: o)
    report = oracle.compare(SCENARIO, ["reference", "prepatch"])
    assert report.agree and report.divergences == []


def test_fixed_verdict_and_stable_signature(registry):
    registry("prepatch", _drop_vectoring)
    registry("postpatch", lambda o, s: o)
    r1 = oracle.compare(SCENARIO, ["reference", "prepatch", "postpatch"])
    r2 = oracle.compare(SCENARIO, ["reference", "prepatch", "postpatch"])
    assert [d.signature for d in r1.divergences] == [d.signature for d in r2.divergences]
    (d,) = r1.divergences
    assert d.field == "l1" and d.impls == ("prepatch",) and d.step == 2
    assert d.verdicts == {"prepatch->postpatch": "fixed"}
    assert d.signature == ("vmx l1 @l1.vmentry [prepatch: EXIT EXCEPTION_NMI #PF, IDT-vectoring: None] "
                           "expected: EXIT EXCEPTION_NMI #PF, IDT-vectoring: ext-int 0x20")


def test_signature_ignores_error_codes_and_irrelevant_events(registry):
    registry("prepatch", _drop_vectoring)
    other = parse_scenario("evdiff 1 vendor=vmx ept=off\nl1.idt 0x99\nl1.intercept exceptions=#PF\n"
                           "l2.stack #PF\nl1.vmentry inject=intr(0x31)\n")
    a = oracle.compare(SCENARIO, ["reference", "prepatch"]).divergences[0].signature
    b = oracle.compare(other, ["reference", "prepatch"]).divergences[0].signature
    assert a.replace("0x20", "V") == b.replace("0x31", "V")


def test_regression_and_still_wrong(registry):
    registry("prepatch", lambda o, s: o)
    registry("postpatch", _drop_vectoring)
    (d,) = oracle.compare(SCENARIO, ["reference", "prepatch", "postpatch"]).divergences
    assert d.verdicts == {"prepatch->postpatch": "regression"}
    registry("prepatch", _drop_vectoring)
    (d,) = oracle.compare(SCENARIO, ["reference", "prepatch", "postpatch"]).divergences
    assert d.verdicts == {"prepatch->postpatch": "still-wrong"} and d.impls == ("postpatch", "prepatch")


def test_alarm_is_a_divergence_even_when_outcomes_agree(registry):
    registry("prepatch", lambda o, s: Outcome(o.l1, o.l2, o.shutdown, o.final, ("WARN x86.c:foo",), o.livelock))
    (d,) = oracle.compare(SCENARIO, ["reference", "prepatch"]).divergences
    assert d.field == "alarms" and "WARN x86.c:foo" in d.signature


def test_crash_is_a_finding_not_a_harness_crash(registry):
    def boom(o, s):
        raise KeyError("vcpu")

    registry("prepatch", boom)
    report = oracle.compare(SCENARIO, ["reference", "prepatch"])
    (d,) = report.divergences
    assert d.field.startswith("crash:KeyError@tests/test_oracle.py:")
    assert isinstance(report.results["prepatch"], oracle.Crash)


def test_allowed_outcomes_each_accepted(registry):
    svm = parse_scenario("evdiff 1 vendor=svm\nl1.intercept exceptions=#DF\nl2.idt #GP\nl1.vmentry inject=#GP(0x0)\n")
    ref = api.load("reference").run(svm)
    assert isinstance(ref, api.Allowed) and len(ref.outcomes) == 2
    for i in range(2):
        registry("prepatch", lambda o, s, i=i: ref.outcomes[i])
        assert oracle.compare(svm, ["reference", "prepatch"]).agree
