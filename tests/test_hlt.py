"""HLT and the activity state (issue 14): the language, the reference's
rules (what wakes a halted level, L1's HLT exiting / intercept, vmcs12's
activity state at entry and at exit), and each KVM port's path for them.

Each reference test names the rule it checks; each port test the KVM
function whose behaviour it pins."""
from __future__ import annotations

import pytest

from fuzz import binary
from fuzz.scenario import SPEC_BY_KIND, ScenarioError, event
from fuzz.text import format_scenario, parse_scenario
from fuzz.oracle import compare
from impls.api import Delivered, EntryFailed, SmiHandled, VmExit, load
from impls.arch.events import Ev, EvType, ext_intr


def sc(vendor: str, body: str):
    return parse_scenario(f"evdiff 1 vendor={vendor}\n{body}")


def ref(vendor: str, body: str):
    return load("reference").run(sc(vendor, body))


def obs(out, level):
    return [o for _, o in (out.l1 if level == 1 else out.l2)]


NMI = Ev(EvType.NMI, 2)

# ------------------------------------------------------------- language --


def test_language_round_trips_and_defaults_encode_as_zero():
    s = sc("vmx", "l1.controls hlt=1\nl1.vmentry inject=nmi activity=hlt\nhlt\n")
    assert parse_scenario(format_scenario(s)) == s
    assert binary.decode(binary.encode(s)) == s
    assert binary.RECORD == 14
    # `activity=keep`, the default, is byte 0 after the inject bytes: an old
    # l1.vmentry record keeps its meaning.
    # Its byte: the kind byte, then each parameter's bytes in spec order.
    spec = SPEC_BY_KIND["l1.vmentry"]
    at = 1 + sum(p.type.width for p in spec.params[:spec.index("activity")])
    for value, byte in (("keep", 0), ("hlt", 2)):
        assert binary.encode_record(event("l1.vmentry", inject=NMI, activity=value))[at] == byte
    assert "activity" not in format_scenario(sc("vmx", "l1.vmentry activity=keep\n"))


def test_svm_activity_is_keep_and_the_text_form_refuses_it():
    s = binary.decode(binary.encode(sc("vmx", "l1.vmentry activity=hlt\n")))
    svm = binary.decode(bytes([binary.encode(s)[0] | 1]) + binary.encode(s)[1:])
    assert svm.events[0]["activity"] == "keep"
    with pytest.raises(ScenarioError, match="VMCB has no activity-state field"):
        sc("svm", "l1.vmentry activity=hlt\n")


# ------------------------------------------------------------ reference --


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_hlt_with_nothing_to_wake_is_quiescent(vendor):
    """SDM2 HLT: the level stops executing; `run` with nothing to wake it
    is a quiescent point, not a livelock."""
    out = ref(vendor, "hlt\nsti\nrun\n")
    assert out.livelock is None
    assert out.final.halted and out.final.level == 1
    assert out.final.interrupts_enabled is True  # the STI after HLT never executed


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_an_enabled_interrupt_wakes_a_halted_level(vendor):
    """SDM2 HLT: an enabled interrupt resumes execution; with IF=0 it does
    not, and the level stays halted."""
    out = ref(vendor, "sti\nhlt\nirq 0x30\n")
    assert obs(out, 1) == [Delivered(1, ext_intr(0x30))]
    assert not out.final.halted
    out = ref(vendor, "cli\nhlt\nirq 0x30\n")
    assert obs(out, 1) == [] and out.final.halted and out.final.irq_pending == (0x30,)


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_an_nmi_wakes_a_halted_level_unless_blocked(vendor):
    out = ref(vendor, "cli\nhlt\nnmi\n")
    assert obs(out, 1) == [Delivered(1, NMI)] and not out.final.halted
    out = ref(vendor, "nmi\ncli\nhlt\nnmi\n")  # the first NMI's handler runs: NMIs blocked
    assert obs(out, 1) == [Delivered(1, NMI)] and out.final.halted and out.final.nmi_pending == 1


def test_an_smi_returns_to_the_hlt_state():
    """SDM 34.10 auto HALT restart: RSM re-enters HLT."""
    out = ref("vmx", "cli\nhlt\nsmi\n")
    assert obs(out, 1) == [SmiHandled(1)] and out.final.halted


def test_vmx_l2_hlt_exits_with_l1s_hlt_exiting_before_executing():
    """SDM 25.1.3 / App. C reason 12; the exit saves activity active, and
    L1 skips the HLT (impls.l1.EMULATED): L2 runs on."""
    out = ref("vmx", "l1.controls hlt=1\nl1.vmentry\nhlt\nl1.vmentry\n")
    assert obs(out, 1) == [VmExit("HLT")]
    assert out.final.level == 2 and not out.final.halted


def test_svm_l2_hlt_exits_with_l1s_hlt_intercept():
    out = ref("svm", "l1.controls hlt=1\nl1.vmentry\nhlt\n")
    assert obs(out, 1) == [VmExit("HLT")] and out.final.level == 1


def test_vmx_direct_exit_from_hlt_saves_activity_hlt_and_keep_re_enters_it():
    """SDM 27.1 / 27.3.4: an interrupt that exits directly finds L2 halted,
    and the exit saves HLT; `keep` re-enters HLT (SDM 26.6.2), `active`
    resumes L2 (kvm-unit-tests vmx_tests.c interrupt_main,
    "intercepted interrupt + hlt")."""
    body = "l1.intercept intr=1\nl1.vmentry\ncli\nhlt\nirq 0x30\nrun\n"
    out = ref("vmx", body)
    assert obs(out, 1) == [VmExit("EXTERNAL_INTERRUPT", halted=True)]
    assert str(obs(out, 1)[0]) == "EXIT EXTERNAL_INTERRUPT, activity HLT"
    out = ref("vmx", body + "l1.intercept\nl1.vmentry\n")
    assert out.final.level == 2 and out.final.halted  # IF=0 in L2: the interrupt waits
    out = ref("vmx", body + "l1.intercept\nl1.vmentry activity=active\n")
    assert out.final.level == 2 and not out.final.halted
    out = ref("vmx", body.replace("cli\n", "") + "l1.intercept\nl1.vmentry\n")
    assert obs(out, 2) == [Delivered(2, ext_intr(0x30))] and not out.final.halted  # IF=1: it wakes L2


def test_svm_direct_exit_from_hlt_resumes_l2_active():
    """APM Table B-2: no activity state; the next VMRUN resumes L2 past the
    HLT."""
    out = ref("svm", "l1.intercept intr=1\nl1.vmentry\nhlt\nirq 0x30\nrun\nstgi\nl1.intercept\nl1.vmentry\n")
    assert obs(out, 1)[0] == VmExit("INTR")
    assert out.final.level == 2 and not out.final.halted


def test_vmx_exit_during_delivery_that_woke_l2_saves_active():
    """SDM 27.1: an event whose delivery exits (indirectly) returns the
    processor to the active state before the exit."""
    out = ref("vmx", "l1.intercept exceptions=#PF\nl2.stack #PF\nl1.vmentry\nsti\nhlt\nirq 0x30\n")
    assert [o.halted for o in obs(out, 1)] == [False]
    assert obs(out, 1)[0].vectoring == ext_intr(0x30)


def test_vmx_entry_in_hlt_state_then_an_nmi_wakes_l2():
    out = ref("vmx", "l1.vmentry activity=hlt\nrun\n")
    assert out.final.level == 2 and out.final.halted
    out = ref("vmx", "l1.vmentry activity=hlt\nnmi\n")
    assert obs(out, 2) == [Delivered(2, NMI)] and not out.final.halted


def test_vmx_vectoring_entry_in_hlt_state_is_active():
    """SDM 26.6.2: after a vectoring entry the processor is active."""
    out = ref("vmx", "l1.vmentry inject=intr(0x30) activity=hlt\n")
    assert obs(out, 2) == [Delivered(2, ext_intr(0x30))] and not out.final.halted


def test_vmx_hlt_state_accepts_only_some_injections():
    """SDM 26.3.1.5: with activity HLT only an external interrupt, an NMI,
    a hardware #DB or #MC may be injected."""
    out = ref("vmx", "l1.vmentry inject=#GP(0x0) activity=hlt\n")
    assert obs(out, 1) == [EntryFailed("FAILED_ENTRY|INVALID_GUEST_STATE")]
    out = ref("vmx", "l1.vmentry inject=#DB activity=hlt\n")
    assert obs(out, 2) == [Delivered(2, Ev(EvType.HW_EXCEPTION, 1))]


def test_instructions_of_a_halted_level_do_not_execute():
    out = ref("vmx", "cli\nhlt\nl1.vmentry\nexception #GP\n")
    assert obs(out, 1) == [] and out.final.level == 1 and out.final.halted


# ----------------------------------------------------------------- ports --

PORTS = ("prepatch", "postpatch", "postpatch-v2", "upstream", "current")


def port(name: str, vendor: str, body: str):
    return load(name).run(sc(vendor, body))


#: Scenarios every port gets right, each through the KVM path it names.
AGREE = {
    # kvm_emulate_halt (VMX EXIT_REASON_HLT / SVM halt_interception), then
    # vcpu_block: kvm_arch_vcpu_runnable is false, kvm_vcpu_block sleeps.
    "vmx-l1-halts": ("vmx", "cli\nhlt\nirq 0x30\nrun\n"),
    "svm-l1-halts": ("svm", "cli\nhlt\nirq 0x30\nrun\n"),
    # kvm_vcpu_has_events: an allowed interrupt / NMI wakes the vCPU.
    "vmx-irq-wakes": ("vmx", "sti\nhlt\nirq 0x30\n"),
    "svm-nmi-wakes": ("svm", "cli\nhlt\nnmi\n"),
    # nested_vmx_run with vmcs12's activity state HLT: kvm_vcpu_halt /
    # kvm_emulate_halt_noskip; an NMI wakes L2 (vcpu_block).
    "vmx-entry-hlt-nmi": ("vmx", "l1.vmentry activity=hlt\nnmi\n"),
    "vmx-entry-hlt-quiet": ("vmx", "l1.vmentry activity=hlt\nrun\n"),
    # nested_vmx_l1_wants_exit's HLT case / nested_svm_intercept on vmcb12's
    # HLT intercept; L1 skips the HLT.
    "vmx-hlt-exit": ("vmx", "l1.controls hlt=1\nl1.vmentry\nhlt\nl1.vmentry\n"),
    "svm-hlt-exit": ("svm", "l1.controls hlt=1\nl1.vmentry\nsti\nhlt\nstgi\nl1.vmentry\n"),
    # Without L1's HLT exiting, L0 halts L2 itself (kvm_emulate_halt in guest
    # mode); an intercepted interrupt then exits from the halted L2:
    # sync_vmcs02_to_vmcs12 saves activity HLT, `keep` re-enters it.
    "vmx-intr-exit-from-hlt": ("vmx", "l1.intercept intr=1\nl1.vmentry\ncli\nhlt\nirq 0x30\nrun\n"
                                      "l1.intercept\nl1.vmentry\n"),
    "svm-intr-exit-from-hlt": ("svm", "l1.intercept intr=1\nl1.vmentry\ncli\nhlt\nirq 0x30\nrun\nstgi\n"
                                      "l1.intercept\nl1.vmentry\n"),
    # mp_state travels with the migration (KVM_GET/SET_MP_STATE).
    "vmx-migrate-halted": ("vmx", "cli\nhlt\nuser.migrate\nnmi\n"),
}


@pytest.mark.parametrize("name", PORTS)
@pytest.mark.parametrize("case", sorted(AGREE))
def test_hlt_scenarios_agree_with_the_reference(name, case):
    vendor, body = AGREE[case]
    assert compare(sc(vendor, body), ["reference", name]).agree


@pytest.mark.parametrize("name", PORTS)
def test_sync_vmcs02_to_vmcs12_saves_activity_hlt(name):
    out = port(name, "vmx", "l1.intercept intr=1\nl1.vmentry\ncli\nhlt\nirq 0x30\nrun\n")
    assert [str(o) for _, o in out.l1] == ["EXIT EXTERNAL_INTERRUPT, activity HLT"]
    assert out.final.level == 1 and not out.final.halted


@pytest.mark.parametrize("name", ["prepatch", "postpatch", "postpatch-v2"])
def test_511_a_latched_init_wakes_a_halted_l1(name):
    """5.11's kvm_vcpu_has_events counts apic->pending_events whether or not
    INIT can be taken: in VMX root operation (INIT blocked, SDM 23.8) it
    wakes the halted L1, which then runs past its HLT."""
    body = "cli\nhlt\ninit\nrun\n"
    assert ref("vmx", body).final.halted
    out = port(name, "vmx", body)
    assert not out.final.halted and out.final.init_pending


@pytest.mark.parametrize("name", ["upstream", "current"])
def test_61_a_blocked_init_does_not_wake_l1(name):
    """6.1's kvm_vcpu_has_events asks kvm_apic_init_sipi_allowed."""
    out = port(name, "vmx", "cli\nhlt\ninit\nrun\n")
    assert out.final.halted and out.final.init_pending


def test_618_halt_with_an_event_pending_stays_runnable():
    """6.18's __kvm_emulate_halt keeps the vCPU RUNNABLE when it has an
    event: entering L2 in the HLT state with an intercepted interrupt
    pending, the exit then saves activity *active*; 6.1 (and the SDM, 27.1
    and 27.3.4: the interrupt exits directly from the HLT state) save HLT."""
    body = "cli\nl1.intercept intr=1\nirq 0x30\nl1.vmentry activity=hlt\n"
    assert [str(o) for _, o in ref("vmx", body).l1] == ["EXIT EXTERNAL_INTERRUPT, activity HLT"]
    assert [str(o) for _, o in port("upstream", "vmx", body).l1] == ["EXIT EXTERNAL_INTERRUPT, activity HLT"]
    assert [str(o) for _, o in port("current", "vmx", body).l1] == ["EXIT EXTERNAL_INTERRUPT"]


@pytest.mark.parametrize("name", PORTS)
def test_kvm_does_not_check_injection_in_the_hlt_state(name):
    """SDM 26.3.1.5 fails an entry injecting #GP in the HLT activity state;
    nested_vmx_run (every version) checks nothing and delivers it."""
    out = port(name, "vmx", "l1.vmentry inject=#GP(0x0) activity=hlt\n")
    assert [str(o) for _, o in out.l2] == ["L2 handles #GP(ec=0x0)"]


@pytest.mark.parametrize("name", PORTS)
@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_kvm_leaves_hlt_for_an_smi(name, vendor):
    """kvm_vcpu_has_events counts a pending SMI: vcpu_block wakes the vCPU
    and RSM returns past the HLT; the SDM's auto HALT restart (34.10) would
    return to the HLT state."""
    out = port(name, vendor, "cli\nhlt\nsmi\n")
    assert [str(o) for _, o in out.l1] == ["SMI handled in SMM (L1 running)"]
    assert not out.final.halted


@pytest.mark.parametrize("name", ["reference", *PORTS])
@pytest.mark.parametrize("body", ["user.set_exception #GP injected=1\n", "user.set_nmi injected=1\n",
                                  "user.set_irq 0x30\n"])
def test_nothing_is_set_in_flight_in_a_halted_vcpu(name, body):
    """possible.raised_or_in_flight_possible: a halted CPU raised nothing and
    delivers nothing, so userspace sets neither; a pending NMI (KVM_NMI) is
    not in flight and wakes it."""
    out = load(name).run(sc("vmx", "cli\nhlt\n" + body))
    assert out.l1 == () and out.final.halted
    out = load(name).run(sc("vmx", "cli\nhlt\nuser.set_nmi\n"))
    assert [str(o) for _, o in out.l1] == ["L1 handles NMI"] and not out.final.halted
