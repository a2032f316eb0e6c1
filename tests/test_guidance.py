"""Features for libFuzzer beyond line coverage (fuzz/guidance.py) and the
target feeding them (fuzz/evdiff_fuzzer.py)."""
import subprocess
import sys
import types
from pathlib import Path

import pytest

from fuzz import binary, guidance, oracle, targetenv
from fuzz.text import read_scenario

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "corpus" / "seeds"
BUG_A_SVM = SEEDS / "bug-a-lost-first-exception-svm.txt"  # L1 injects #GP, its delivery hits an intercepted #PF
BUG_DF_SVM = SEEDS / "bug-df-spurious-svm.txt"  # the same with an injected #PF


def test_features_tell_apart_what_line_coverage_does_not():
    """The two seeds run the same lines of the reference (a fault during
    the delivery of an injected exception, intercepted by L1); the
    features name which fault during which delivery."""
    a = guidance.feature_texts(oracle.compare(read_scenario(BUG_A_SVM)))
    df = guidance.feature_texts(oracle.compare(read_scenario(BUG_DF_SVM)))
    note = ("0 #PF(ec=N) during delivery of {} is intercepted by LN: exit with it as IDT-vectoring "
            "(SDM N.N.N, APM N.N.N)")
    assert note.format("#GP(ec=N)") in a and note.format("#PF(ec=N)") in df
    assert "0 L1 EXIT EXCP #PF, IDT-vectoring: exception" in a and "0 L1 EXIT EXCP #PF, IDT-vectoring: #PF" in df
    # each seed's root cause, a pair of a reference note with a port's note at its step
    assert any(f.startswith("cause svm kvm_multiple_exception: vector N replaces vector N") for f in a)
    assert any(" @ kvm_multiple_exception: " in f for f in a)
    assert guidance.features(oracle.compare(read_scenario(BUG_A_SVM))) != \
        guidance.features(oracle.compare(read_scenario(BUG_DF_SVM)))


def test_features_are_the_same_in_every_process():
    """Fork-mode jobs share one corpus: a feature must fall in the same
    counter in each (no per-process string hashing)."""
    code = ("from fuzz import guidance, oracle; from fuzz.text import read_scenario; "
            f"print(sorted(guidance.features(oracle.compare(read_scenario({str(BUG_A_SVM)!r})))))")
    want = str(sorted(guidance.features(oracle.compare(read_scenario(BUG_A_SVM)))))
    for seed in ("1", "2"):
        got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                             env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"}, check=True).stdout.strip()
        assert got == want
    assert all(0 <= f < guidance.SIZE for f in eval(want))  # noqa: S307 -- our own output


def test_guidance_setting():
    """Over instrumented line coverage guidance is a choice; without
    instrumentation (the default) it is the only coverage, so it is on."""
    line = {targetenv.INSTRUMENT: "all"}
    assert targetenv.guidance(line) is targetenv.GUIDANCE_DEFAULT
    assert targetenv.guidance(line | {targetenv.GUIDANCE: "0"}) is False
    assert targetenv.guidance(line | {targetenv.GUIDANCE: "1"}) is True
    assert targetenv.INSTRUMENT_DEFAULT == "none" and targetenv.guidance({}) is True
    assert targetenv.guidance({targetenv.GUIDANCE: "0"}) is True


def test_target_bumps_one_reserved_counter_per_feature(monkeypatch):
    target = pytest.importorskip("fuzz.evdiff_fuzzer")
    calls = []
    monkeypatch.setattr(target, "atheris", types.SimpleNamespace(_trace_branch=calls.append))
    monkeypatch.setattr(target, "STORE", None)
    monkeypatch.setattr(target, "RAISE", False)
    monkeypatch.setattr(target, "NAMES", oracle.api.names())
    data = binary.encode(read_scenario(BUG_A_SVM))
    reserved = list(range(7000, 7000 + guidance.SIZE))
    for guide in (reserved, []):
        monkeypatch.setattr(target, "GUIDE", guide)
        monkeypatch.setattr(target, "_RECENT", {})
        for _ in range(2):  # the second run reuses the report, and bumps the same counters
            calls.clear()
            target.TestOneInput(data)
            want = [reserved[f] for f in guidance.features(oracle.compare(binary.decode(data)))] if guide else []
            assert sorted(calls) == sorted(want) and len(set(calls)) == len(calls)
            assert bool(calls) == bool(guide)
