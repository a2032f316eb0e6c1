"""The known-divergences list: parsed with FILE:LINE errors, listed apart in
the summary, never dropped from the store."""
import io

import pytest
from rich.console import Console

from fuzz import campaign, findings, known, oracle
from fuzz.scenario import EvdiffError
from fuzz.text import parse_scenario

SCENARIO = parse_scenario("evdiff 1 vendor=vmx ept=off\nl1.intercept exceptions=#PF\nl2.stack #PF\n"
                          "l1.vmentry inject=intr(0x20)\n")


def test_load_reads_entries_and_comments(tmp_path):
    f = tmp_path / "known.txt"
    f.write_text("# a comment\n\nvmx l1 [prepatch: EXIT EXCEPTION_NMI #PF] ## 5.11, seed class A\n")
    assert known.load(f) == {"vmx l1 [prepatch: EXIT EXCEPTION_NMI #PF]": "5.11, seed class A"}


@pytest.mark.parametrize("text, message", [
    ("vmx l1 [prepatch: nothing]\n", ":1: expected 'SIGNATURE ## REASON'"),
    ("# c\nsig ## why\nsig ## again\n", ":3: signature listed twice"),
    ("sig ##   \n", ":1: expected"),
])
def test_malformed_lines_name_file_and_line(tmp_path, text, message):
    f = tmp_path / "known.txt"
    f.write_text(text)
    with pytest.raises(EvdiffError, match=message):
        known.load(f)


def test_shipped_list_parses_and_names_regression_cases():
    entries = known.load()
    assert len(entries) >= 5
    assert all(reason.endswith("]") for reason in entries.values())


def test_summary_lists_known_findings_apart(tmp_path, fake_impl):
    from fakes import DropVectoring

    fake_impl("prepatch", lambda o, s: DropVectoring().transform(o, s))
    store = findings.FindingStore(tmp_path)
    report = oracle.compare(SCENARIO, ["reference", "prepatch"])
    store.record(report)
    store.flush()
    sig = report.causes[0].signature

    def text(known_list):
        buf = io.StringIO()
        campaign.summary(store, Console(file=buf, width=300), known=known_list)
        return buf.getvalue()

    plain = text({})
    assert "1 root cause(s)" in plain and "evdiff export-test" in plain and "known:" not in plain
    listed = text({sig: "seed class A, 5.11"})
    assert "known: 1 root cause(s)" in listed and "seed class A, 5.11" in listed
    assert "1 root cause(s) in" not in listed
    assert [f.signature for f in store.findings()] == [sig]  # still recorded
