"""The two scenario forms: binary decoding is total, both round-trip."""
import pytest
from hypothesis import given, settings, strategies as st

from fuzz import binary
from fuzz.binary import RECORD, decode, encode
from fuzz.scenario import SPEC_BY_KIND, Config, Event, Scenario, ScenarioError, event
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
    if i == 0:  # the configuration, and how it reads a pending user.set_exception, l1.controls and,
        # on SVM, an l1.vmentry's interruptibility and pending_dbg (fuzz.scenario.svm_vmentry)
        keep = {"user.set_exception": (0, 1), "l1.vmentry": (0, 2), "l1.controls": ()}
        same = lambda e: (e.kind, [e.args[j] for j in keep[e.kind]]) if e.kind in keep else e  # noqa: E731
        assert [same(e) for e in s1.events] == [same(e) for e in s2.events]
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
    ("l0.emulate ec=0x2", "ec= given but no fault= to carry it"),
    ("exception #AC ec=0x2", "#AC's error code is always 0x0"),
    ("l0.emulate #DF ec=0x1", "#DF's error code is always 0x0"),
    ("user.set_exception #AC ec=0x4", "#AC's error code is always 0x0"),
    ("user.set_exception #GP injected=0", "injected=0 (a pending exception) needs caps=exception_payload"),
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


def test_fixed_error_codes_are_that_value_in_every_form():
    """SDM 6.15: #DF and #AC push error code 0.  The text form accepts it
    written as 0; the binary form maps any other code to it; an L1 may
    inject any error code (SDM 26.5.1.1), so l1.vmentry keeps it."""
    assert parse_scenario("evdiff 1\nexception #AC ec=0x0\n").events == (event("exception", 17),)
    for kind in ("exception", "l0.emulate", "user.set_exception"):
        for vec in (8, 17):
            raw = Event(kind, (vec, 0x2) + event(kind).args[2:])  # as a record may hold it
            assert decode(b"\0" + binary.encode_record(raw)).events[0]["ec"] == 0
            assert event(kind, vec, ec=0x2)["ec"] == 0
    assert decode(b"\0" + binary.encode_record(event("exception", 13, ec=0x2))).events[0]["ec"] == 2
    assert parse_scenario("evdiff 1\nl1.vmentry inject=#AC(0x2)\n").events[0]["inject"].error_code == 2


def test_pending_exception_needs_its_cap():
    """Without KVM_CAP_EXCEPTION_PAYLOAD, KVM_SET_VCPU_EVENTS has only an
    injected exception: a pending one reads as injected, in the text form
    (unless written explicitly), the binary form and any Scenario."""
    pending = event("user.set_exception", 13)
    assert not pending["injected"]
    assert Scenario(Config(), (pending,)).events[0]["injected"]
    assert not Scenario(Config(caps=frozenset({"exception_payload"})), (pending,)).events[0]["injected"]
    assert parse_scenario("evdiff 1\nuser.set_exception #GP\n").events[0]["injected"]
    assert format_scenario(parse_scenario("evdiff 1\nuser.set_exception #GP\n")).endswith(
        "user.set_exception #GP injected=1\n")
    body = binary.encode_record(pending)
    assert decode(b"\0" + body).events[0]["injected"]
    assert not decode(bytes([1 << 2]) + body).events[0]["injected"]  # header bit 2: exception_payload
