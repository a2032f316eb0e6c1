"""The evdiff command line: listing, replay, explain, and bad input."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.cli import main

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "corpus" / "seeds"


def test_impls_lists_reference_first(capsys):
    assert main(["impls"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t")[0] == "reference"


def test_replay_seeds_through_the_reference(capsys):
    assert main(["replay", str(SEEDS), "--impls", "reference"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(list(SEEDS.rglob("*.txt"))) >= 25
    assert all(line.endswith("all 1 agree") for line in out)


def test_replay_json_has_outcomes_and_divergences(capsys):
    seed = SEEDS / "bug-a-lost-first-exception-vmx.txt"
    main(["replay", "--json", "--impls", "reference", str(seed)])
    obj = json.loads(capsys.readouterr().out)
    assert obj["path"] == str(seed) and obj["agree"] is True and obj["divergences"] == []
    assert obj["outcomes"]["reference"]["l1"][0][1].startswith("EXIT EXCEPTION_NMI #PF(ec=0x2)")


def test_bad_line_reports_file_and_line_and_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("evdiff 1 vendor=vmx\nrun\nl2.excepton #GP\n")
    assert main(["replay", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"evdiff: {bad}:3: unknown event kind 'l2.excepton' (closest: exception)")


def test_bad_input_stops_before_running_anything(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("evdiff 1\nrun\n")
    (tmp_path / "b.txt").write_text("evdiff 1\nexception #GQ\n")
    assert main(["replay", str(tmp_path)]) == 2
    assert capsys.readouterr().out == ""


def test_missing_path_and_unknown_impl(tmp_path, capsys):
    assert main(["replay", str(tmp_path / "nope.txt")]) == 2
    assert main(["replay", "--impls", "refrence", str(SEEDS)]) == 2
    assert "did you mean 'reference'" in capsys.readouterr().err


def test_explain_prints_each_step(capsys):
    main(["explain", "--impls", "reference", str(SEEDS / "bug-c-interrupt-lost-svm.txt")])
    out = capsys.readouterr().out
    assert "l1.vmentry" in out and "EXIT EXCP #PF(ec=0x2)" in out and "All implementations agree." in out


def test_console_script_runs_without_traceback(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("evdiff 1\nexception ec=0x5 #GP\n")
    proc = subprocess.run([sys.executable, "-m", "fuzz.cli", "replay", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and f"{bad}:2:" in proc.stderr
