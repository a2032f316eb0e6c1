"""Scenarios no CPU or VMM can produce (issue 12, section 2).

The reference and the KVM ports must be handed the same architectural
situation: each such scenario either has one meaning for every
implementation (`fuzz.scenario`, `impls.arch.possible`, the mode change as
an instruction, the oracle's reset rule) or the text form refuses it with
FILE:LINE and exit 2.
"""
import pytest

from fuzz import oracle
from fuzz.cli import main
from fuzz.scenario import Config, Scenario, event
from fuzz.text import parse_scenario
from impls.api import Delivered, Outcome, Reset, load
from impls.arch import Mode, possible
from impls.arch.events import EvType, exception, ext_intr

#: postpatch-v2 drops every exception userspace sets (known:
#: v2-set-events-drops-*), which would hide what these tests look at.
WITHOUT_V2 = ["reference", "prepatch", "postpatch", "upstream"]
ALL = None


def agree(text: str, names=WITHOUT_V2) -> bool:
    report = oracle.compare(parse_scenario(text), names)
    return report.agree


def ref(text: str):
    return load("reference").run(parse_scenario(text))


def l1(out):
    return [o for _, o in out.l1]


# ----------------------------------------------------- error codes, #BR --


@pytest.mark.parametrize("kind", ["exception", "l0.emulate"])
def test_ac_error_code_is_zero_for_every_side(kind):
    """SDM 6.15 Interrupt 17: #AC pushes 0.  KVM's SVM #AC intercept queues
    #AC(0) whatever the code, the reference pushed the scenario's code."""
    s = Scenario(Config("svm"), (event(kind, 17, ec=0x2),))
    assert oracle.compare(s).agree
    assert l1(load("reference").run(s)) == [Delivered(1, exception(17, 0))]


def test_text_form_refuses_a_fixed_error_code_with_file_and_line(tmp_path, capsys):
    bad = tmp_path / "ac.txt"
    bad.write_text("evdiff 1 vendor=svm npt=on\nexception #AC ec=0x2\n")
    assert main(["replay", str(bad)]) == 2
    assert capsys.readouterr().err.startswith(f"evdiff: {bad}:2: #AC's error code is always 0x0")


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
@pytest.mark.parametrize("vector", [3, 4])
def test_the_emulator_raising_bp_or_of_completes_for_every_side(vendor, vector):
    """KVM's emulator never queues #BP / #OF (emulate_int performs INT3 /
    INTO in real mode only).  The reference took it for INT3 (ret=+1), the
    6.1 SVM port for a 2-byte instruction: a divergence no KVM can show."""
    s = Scenario(Config(vendor), (event("l0.emulate", vector), event("l1.vmentry"), event("l0.emulate", vector)))
    assert s.events[0] == event("l0.emulate") and s.events[2] == event("l0.emulate")
    assert oracle.compare(s).agree


def test_text_form_refuses_the_emulator_raising_bp_with_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bp.txt"
    bad.write_text("evdiff 1 vendor=svm\nl0.emulate #BP\n")
    assert main(["replay", str(bad)]) == 2
    assert capsys.readouterr().err.startswith(f"evdiff: {bad}:2: KVM's emulator never raises #BP")


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
@pytest.mark.parametrize("kind", ["exception", "l0.emulate"])
def test_br_in_64_bit_mode_is_ud(vendor, kind):
    """SDM2 BOUND: #UD in 64-bit mode.  The SVM ports injected #BR there,
    and VMRUN refuses it (APM 15.20): KVM_EXIT_FAIL_ENTRY."""
    text = f"evdiff 1 vendor={vendor}\nl1.mode long\n{kind} #BR\n"
    assert agree(text, ALL)
    assert l1(ref(text)) == [Delivered(1, exception(6))]
    assert l1(ref(f"evdiff 1 vendor={vendor}\n{kind} #BR\n")) == [Delivered(1, exception(5))]


@pytest.mark.parametrize("injected", [0, 1])
def test_user_br_in_64_bit_mode_is_not_set(injected):
    text = f"evdiff 1 vendor=svm caps=exception_payload\nl1.mode long\nuser.set_exception #BR injected={injected}\n"
    assert agree(text, ALL)
    assert l1(ref(text)) == []
    assert possible.exception_settable(5, Mode.PROTECTED) and not possible.exception_settable(5, Mode.LONG)


# ------------------------------------------------------ events in flight --


@pytest.mark.parametrize("text", [
    "evdiff 1 vendor=vmx\nl1.vmentry\nmov_ss\nuser.set_nmi injected=1\n",
    "evdiff 1 vendor=vmx\nmov_ss\nuser.set_nmi injected=1\n",
    "evdiff 1 vendor=vmx\nnmi\nrun\nuser.set_nmi injected=1\n",
    "evdiff 1 vendor=vmx\nl1.vmentry\nnmi\nrun\nuser.set_nmi injected=1\n",
    "evdiff 1 vendor=vmx\ncli\nuser.set_irq 0x20\n",
    "evdiff 1 vendor=vmx\ncli\nsti\nuser.set_irq 0x20\n",
    "evdiff 1 vendor=svm\nmov_ss\nuser.set_nmi injected=1\n",
    "evdiff 1 vendor=svm\ncli\nuser.set_irq 0x20\n",
])
def test_event_in_flight_where_no_cpu_recognises_it_is_not_set(text):
    """VMX entry refuses to inject it (SDM 26.3.1.5): the ports failed the
    entry, the reference delivered it (or left the architecture)."""
    assert agree(text, ALL)
    out, without = ref(text), ref(text.rsplit("user.", 1)[0])
    assert (out.l1, out.l2, out.final, out.undefined_from) == (without.l1, without.l2, without.final, None)
    assert "not set (possible.in_flight_possible)" in " ".join(n for _, n in out.notes)


def test_event_in_flight_where_a_cpu_recognises_it_is_delivered():
    assert l1(ref("evdiff 1\nuser.set_irq 0x20\n")) == [Delivered(1, ext_intr(0x20))]
    assert agree("evdiff 1 vendor=vmx\nsti\nuser.set_nmi injected=1\n", ALL)  # STI: IMPL-SPECIFIC, allowed
    ok = possible.in_flight_possible
    assert ok(EvType.EXT_INTR, True, None, True) and ok(EvType.NMI, False, "sti", False)
    assert not ok(EvType.EXT_INTR, False, None, False) and not ok(EvType.EXT_INTR, True, "sti", False)
    assert not ok(EvType.NMI, True, "movss", False) and not ok(EvType.NMI, True, None, True)


# --------------------------------------------------- pending exceptions --


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_pending_exception_without_its_cap_is_injected_for_every_side(vendor):
    """Without KVM_CAP_EXCEPTION_PAYLOAD the driver can only inject; the
    reference intercept-checked it as pending and exited to L1."""
    body = "l1.intercept exceptions=#GP\nl1.vmentry\nuser.set_exception #GP\n"
    assert agree(f"evdiff 1 vendor={vendor}\n{body}")
    assert [o for _, o in ref(f"evdiff 1 vendor={vendor}\n{body}").l2] == [Delivered(2, exception(13, 0))]
    pending = ref(f"evdiff 1 vendor={vendor} caps=exception_payload\n{body}")
    assert pending.l2 == () and pending.final.level == 1


# ------------------------------------------------------------ mode changes --


def test_mode_change_comes_after_the_pending_events():
    """A mode changes by an instruction, so what is pending or in flight is
    delivered first, in the old mode; the reference had delivered this #PF
    in real mode, the ports had failed the entry (error code with PE=0)."""
    text = "evdiff 1 vendor=vmx\nl1.idt_limit 0\nuser.set_exception #PF\nl1.mode real\n"
    assert agree(text)
    assert ref(text).shutdown is not None  # #PF -> #GP -> #DF -> #GP: protected-mode gates beyond the limit
    text = "evdiff 1 vendor=vmx\nuser.set_exception #GP\nl1.mode real\nexception #GP\n"
    assert agree(text)
    assert l1(ref(text)) == [Delivered(1, exception(13, 0)), Delivered(1, exception(13))]


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_mode_change_is_an_instruction_of_the_running_level_only(vendor):
    """The running level's mode change ends its STI shadow like any
    instruction, so the interrupt comes at the next boundary; the other
    level's mode is vmcs12 / vmcb12 state L1 writes, which executes nothing
    in the running level (L2 keeps its shadow, and the CLI then shuts the
    window)."""
    text = f"evdiff 1 vendor={vendor}\ncli\nsti\nl1.mode long\nirq 0x20\ncli\n"
    assert agree(text, ALL)
    assert l1(ref(text)) == [Delivered(1, ext_intr(0x20))]
    text = f"evdiff 1 vendor={vendor}\nl1.vmentry\ncli\nsti\nl1.mode long\nirq 0x20\ncli\n"
    assert agree(text, ALL)
    out = ref(text)
    assert out.l2 == () and out.final.irq_pending == (0x20,)
    text = f"evdiff 1 vendor={vendor}\nl1.vmentry\nl2.mode real\nexception #GP\n"
    assert agree(text, ALL) and [o for _, o in ref(text).l2] == [Delivered(2, exception(13))]


# ------------------------------------------------------------ INIT reset --


def _drop_delivery(out, scenario):
    """The port resets before re-injecting: no delivery before the Reset."""
    return Outcome(tuple(x for x in out.l1 if not isinstance(x[1], Delivered)), out.l2, out.shutdown, out.final,
                   out.alarms, out.livelock)


def test_delivery_wiped_by_a_reset_before_its_handler_runs_is_not_compared(fake_impl):
    text = "evdiff 1 vendor=svm\nrun\nuser.set_exception #GP\ninit\n"
    out = ref(text)
    assert [type(o) for o in l1(out)] == [Delivered, Reset] and out.l1[0][0] == out.l1[1][0]
    fake_impl("prepatch", _drop_delivery)
    assert oracle.compare(parse_scenario(text), ["reference", "prepatch"]).agree
    assert agree("evdiff 1 vendor=svm\ninit\nuser.set_irq 0x30\n", ALL)
    assert agree("evdiff 1 vendor=svm caps=exception_payload\nl1.vmentry\nuser.set_exception #GP\ninit\nrun\n",
                 ALL)


def test_delivery_whose_handler_ran_before_the_reset_is_compared(fake_impl):
    text = "evdiff 1 vendor=svm\nuser.set_exception #GP\nsti\ninit\n"
    out = ref(text)
    assert [type(o) for o in l1(out)] == [Delivered, Reset] and out.l1[0][0] < out.l1[1][0]
    fake_impl("prepatch", _drop_delivery)
    report = oracle.compare(parse_scenario(text), ["reference", "prepatch"])
    assert [d.field for d in report.divergences] == ["l1"]


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_a_pf_armed_before_a_switch_to_real_mode_does_not_hit_a_real_mode_delivery(vendor):
    """`delivery_fault #PF` armed in protected mode, then the level enters
    real mode, where nothing is paged: the #GP the emulator raises is
    delivered without it, for every side (`possible.delivery_fault_applies`)."""
    text = f"evdiff 1 vendor={vendor}\ndelivery_fault #PF\nl1.mode real\nl0.emulate #GP\n"
    assert not possible.delivery_fault_applies(14, Mode.REAL) and possible.delivery_fault_applies(14, Mode.LONG)
    assert [o for _, o in ref(text).l1] == [Delivered(1, exception(13, None))]
    assert agree(text, ["reference", "prepatch"])


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
@pytest.mark.parametrize("kind", ["exception #PF", "l0.emulate #PF", "l0.emulate #NP", "exception #TS", "l0.emulate #AC"])
def test_an_instruction_raises_no_pf_in_real_mode(vendor, kind):
    """No paging in real mode: an instruction that "raises #PF" there
    raises nothing and completes, for every side (`possible.raised`); it
    no longer leaves the architecture, so KVM's alarms on it (the real-mode
    error-code slip) are not reported as findings."""
    text = f"evdiff 1 vendor={vendor}\nl1.mode real\n{kind}\n"
    assert possible.raised(14, Mode.REAL) is None and possible.raised(14, Mode.PROTECTED) == 14
    out = ref(text)
    assert l1(out) == [] and out.undefined_from is None
    assert agree(text, ALL)
