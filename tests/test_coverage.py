"""`evdiff coverage`: the reference's rules and the ports' functions and
note branches a corpus reached (fuzz/coverage.py)."""
import json
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from fuzz import binary, coverage, oracle
from fuzz.cli import main
from fuzz.strategies import scenarios
from fuzz.text import read_scenario
from impls import api

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "corpus" / "seeds"
BUG_A_VMX = SEEDS / "bug-a-lost-first-exception-vmx.txt"
SMI_SVM = SEEDS / "smi-intercepted-svm.txt"
MOV_SS = SEEDS / "nmi-held-by-mov-ss.txt"


def _rule(cov: dict, text: str) -> dict:
    (r,) = [r for r in cov["reference"]["rules"] if r["rule"] == text]
    return r


def test_rules_are_every_note_and_choice_call_site_of_the_model():
    rules = coverage.reference_rules()
    lines = coverage.MODEL.read_text().splitlines()
    assert {r.kind for r in rules} == {"note", "choice"}
    for r in rules:  # each names the line of its call
        assert any(call in lines[r.line - 1] for call in ("note(", "choose(", "_outside(", "_shadow_blocks(", "_fails(")), r
    texts = {r.text for r in rules}
    assert "SDM 6.8.3: consecutive MOV SS" in texts  # a choice
    assert "… during delivery of …: … (SDM Table 6-5)" in texts  # a note, values as …
    # A helper's argument followed to its callers: `_outside(...)`, `_shadow_blocks(lv, rule)`.
    assert "outside the architecture from here: #PF raised in real mode" in texts
    assert "SDM2 STI: NMI after STI" in texts
    assert "…" not in texts and len(texts) == len(rules)


def test_a_helper_passing_its_argument_on_is_followed_to_each_call_site():
    source = '''
class Machine:
    def _outside(self, why):
        self.note(f"outside: {why}")

    def _held(self, lv, rule):
        return self.choose(rule, 2)

    def ev_a(self, ev):
        self._outside("real mode")
        self._outside(f"set {ev}")
        self._held(ev, rule="SDM 1.2: held")

    def ev_b(self, ev):
        self._outside(ev.why)
        self.note("plain (SDM 3)")
'''
    got = {(r.kind, r.text, r.line) for r in coverage.reference_rules(source)}
    assert got == {("note", "outside: real mode", 10), ("note", "outside: set …", 11),
                   ("choice", "SDM 1.2: held", 12), ("note", "outside: …", 4), ("note", "plain (SDM 3)", 16)}


def test_measure_counts_distinct_scenarios_and_restores_the_profiler():
    a, smi = read_scenario(BUG_A_VMX), read_scenario(SMI_SVM)
    cov = coverage.measure([a, smi, a], api.names())
    assert (cov.inputs, cov.scenarios) == (3, 2)
    assert sys.getprofile() is None
    out = cov.to_json()
    # The bug-A seed: #PF during the injected interrupt's delivery, intercepted by L1.
    hit = _rule(out, "… during delivery of … is intercepted by L1: exit with it as IDT-vectoring "
                     "(SDM 27.2.3, APM 15.7.2)")
    assert hit["scenarios"] == 1 and hit["variants"] == {"#PF(ec=N) | ext-int N": 1}
    assert _rule(out, "SDM 6.8.3: consecutive MOV SS")["scenarios"] == 0
    pre = out["ports"]["prepatch"]
    funcs = {(f["file"], f["function"]): f["scenarios"] for f in pre["functions"]}
    assert funcs[("arch/x86/kvm/vmx/nested.c", "vmx_inject_page_fault_nested")] == 1  # the VMX seed only
    assert funcs[("arch/x86/kvm/svm/nested.c", "nested_svm_smi")] == 1  # the SVM seed only
    assert funcs[("arch/x86/kvm/x86.c", "kvm_vcpu_ioctl_x86_get_vcpu_events")] == 0  # no user.migrate
    assert 0 < pre["reached"] < pre["total"] == len(funcs)
    notes = {n["branch"]: n["scenarios"] for n in pre["note_branches"]}
    assert notes["nested_svm_smi: SMI intercepted by L1: #VMEXIT(SMI), SMI left pending"] == 1
    assert not out["reference"]["not_enumerated"] and not pre["notes_not_enumerated"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(max_events=12))
def test_every_note_and_choice_made_is_an_enumerated_rule(scenario):
    """What the implementations note and choose on is in the static lists,
    so a rule listed as never reached is one nothing made."""
    cov = coverage.measure([scenario], api.names())
    assert not cov.unlisted
    for port in cov.ports.values():
        assert not port.unlisted, port.name
    reached = {r for r, n in cov.rule_hits.items() if n}
    ref = oracle.run_one(oracle.REFERENCE, scenario)
    for out in getattr(ref, "outcomes", (ref,)):
        for _, text in out.notes:
            assert any(r.matches(text) for r in reached), text


def test_findings_directory_gives_its_corpus_and_finding_inputs(tmp_path):
    import hashlib

    f = tmp_path / "findings"
    (f / ".evdiff" / "seeds").mkdir(parents=True)
    (f / "stats.json").write_text("{}")
    data = binary.encode(read_scenario(BUG_A_VMX))
    (f / ".evdiff" / "seeds" / "x.bin").write_bytes(data)  # generated: not an input
    (f / "corpus").mkdir()
    corpus_file = f / "corpus" / hashlib.sha1(data).hexdigest()
    corpus_file.write_bytes(data)
    (f / "corpus" / "README").write_text("not an input")
    d = f / "0123456789ab"
    (d / "examples").mkdir(parents=True)
    (d / "finding.json").write_text("{}")
    for stem in (d / "smallest", d / "examples" / "e1"):
        stem.with_suffix(".txt").write_text(MOV_SS.read_text())
        stem.with_suffix(".bin").write_bytes(binary.encode(read_scenario(MOV_SS)))
    assert coverage.input_files([str(f)]) == [corpus_file, d / "examples" / "e1.txt", d / "smallest.txt"]


def test_cli_json_and_table(tmp_path, capsys):
    assert main(["coverage", "--json", "--impls", "upstream", str(BUG_A_VMX)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["implementations"] == ["reference", "upstream"] and list(out["ports"]) == ["upstream"]
    funcs = out["ports"]["upstream"]["functions"]
    never = {f["function"] for f in funcs if not f["scenarios"]}
    ran = {f["function"] for f in funcs if f["scenarios"]}
    assert main(["coverage", "--unreached", "--impls", "upstream", str(BUG_A_VMX)]) == 0
    text = capsys.readouterr().out
    rows = {line.split("│")[2].strip() for line in text.splitlines() if line.count("│") == 4}
    assert "SDM 6.8.3: consecutive MOV SS" in text  # a rule never reached
    assert never <= rows and not ran & rows  # --unreached: only what was never reached
    assert main(["coverage", "--impls", "upstream", str(BUG_A_VMX)]) == 0
    rows = {line.split("│")[2].strip() for line in capsys.readouterr().out.splitlines() if line.count("│") == 4}
    assert never | ran <= rows
    bad = tmp_path / "bad.txt"
    bad.write_text("evdiff 1\nexception #GQ\n")
    assert main(["coverage", str(bad)]) == 2
