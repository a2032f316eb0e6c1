"""The two scenario forms: binary decoding is total, both round-trip."""
import pytest
from hypothesis import given, settings, strategies as st

from fuzz import binary
from fuzz.binary import RECORD, decode, encode
from fuzz.scenario import ScenarioError
from fuzz.text import format_scenario, parse_scenario

SETTINGS = settings(max_examples=300, deadline=None)


@SETTINGS
@given(st.binary(max_size=RECORD * 20))
def test_every_byte_string_decodes(data):
    s = decode(data)
    assert len(s.events) == max(0, -(-(len(data) - 1) // RECORD))


@SETTINGS
@given(st.binary(max_size=RECORD * 20))
def test_binary_text_binary_round_trip(data):
    s = decode(data)
    text = format_scenario(s)
    assert parse_scenario(text) == s
    assert format_scenario(parse_scenario(text)) == text
    assert decode(encode(s)) == s


@SETTINGS
@given(st.binary(min_size=1, max_size=RECORD * 10), st.data())
def test_one_byte_changes_one_event(data, draw):
    i = draw.draw(st.integers(0, len(data) - 1))
    b = draw.draw(st.integers(0, 255))
    changed = data[:i] + bytes([b]) + data[i + 1:]
    s1, s2 = decode(data), decode(changed)
    if i == 0:
        assert s1.events == s2.events
    else:
        assert s1.config == s2.config
        assert sum(a != b for a, b in zip(s1.events, s2.events)) <= 1


def test_long_inputs_are_capped():
    assert len(decode(bytes(1 + RECORD * (binary.MAX_EVENTS + 5))).events) == binary.MAX_EVENTS


GOOD = """\
; a description
; on two lines
evdiff 1 vendor=svm npt=off caps=exception_payload
l1.intercept exceptions=#GP,#PF nmi=1
l2.idt #GP gate=bad_type   ; trailing comment
l1.vmentry inject=#PF(0x2)
exception #PF ec=0x4 cr2=0x1000
irq 0x20
run
"""


def test_text_round_trip_keeps_description():
    s = parse_scenario(GOOD)
    assert s.description == "a description\non two lines"
    again = parse_scenario(format_scenario(s))
    assert again == s and again.description == s.description
    assert "l2.idt #GP gate=bad_type" in format_scenario(s)


@pytest.mark.parametrize("line, message", [
    ("l2.excepton #GP", "unknown event kind 'l2.excepton' (closest: exception)"),
    ("exception #XX", "unknown vector '#XX'"),
    ("exception #UD ec=0x3", "pushes no error code"),
    ("exception #GP cr2=0x1000", "cr2= is only for #PF"),
    ("exception #PF cr2=0x1234", "multiple of 0x1000"),
    ("irq 300", "not in 0..255"),
    ("l1.intercept nmi=2", "not a boolean"),
    ("l1.intercept nmii=1", "has no parameter 'nmii' (closest: nmi)"),
    ("l1.vmentry inject=intr", "needs a vector"),
    ("run now", "not name=value (comments start with ';')"),
    ("exception #GP ec=0x1 ec=0x2", "given twice"),
])
def test_bad_lines_name_file_and_line(line, message):
    with pytest.raises(ScenarioError, match=None) as e:
        parse_scenario(f"evdiff 1 vendor=vmx\nrun\n{line}\n", "x.txt")
    assert str(e.value).startswith("x.txt:3: ")
    assert message in str(e.value)


def test_bad_header():
    with pytest.raises(ScenarioError, match=r"^h.txt:2: vendor=arm is not one of vmx, svm"):
        parse_scenario("; c\nevdiff 1 vendor=arm\n", "h.txt")
    with pytest.raises(ScenarioError, match=r"^h.txt:1: expected the header"):
        parse_scenario("run\n", "h.txt")
    with pytest.raises(ScenarioError, match=r"unknown cap 'exception_paylod' \(closest: exception_payload\)"):
        parse_scenario("evdiff 1 caps=exception_paylod\n", "h.txt")
