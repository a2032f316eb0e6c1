"""L1's edits of L2's state before an entry and free VM-entry injection fields
(issue 14): `l1.vmentry interruptibility= if= pending_dbg=` and `inject=`
with any type, vector, deliver-error-code bit, reserved bits and 32-bit
error code.  The language (text, binary), the reference's cited rules, the
simulated CPU and each port's path (KVM's own checks where it has them, the
CPU's where it has none)."""
from __future__ import annotations

import pytest

import agreement

from fuzz import binary
from fuzz.scenario import SPEC_BY_KIND, ScenarioError, event
from fuzz.text import format_scenario, parse_scenario
from impls import api
from impls.api import Delivered, EntryFailed, VmExit
from impls.arch import Ev, EvType
from impls.arch import vmx as avmx
from impls.arch.events import exception

PORTS = ("prepatch", "postpatch", "postpatch-v2", "upstream", "current")
BAD_STATE = EntryFailed("FAILED_ENTRY|INVALID_GUEST_STATE")
VMFAIL = EntryFailed("VMfailValid(7)")
INVALID = EntryFailed("VMEXIT_INVALID")


def sc(vendor: str, body: str):
    return parse_scenario(f"evdiff 1 vendor={vendor}\n{body}\n")


def outcomes(name: str, s) -> list:
    out = api.load(name).run(s)
    return list(out.outcomes) if isinstance(out, api.Allowed) else [out]


def l1(out) -> list:
    return [o for _, o in out.l1]


def l2(out) -> list:
    return [o for _, o in out.l2]


# ------------------------------------------------------------ the language --


def test_new_parameters_come_last_with_defaults_of_byte_zero():
    names = [p.name for p in SPEC_BY_KIND["l1.vmentry"].params]
    # insn_len (tests/test_rip.py) sits between inject and L1's edits.
    assert names[0] == "inject" and names[1:] == ["insn_len", "interruptibility", "if", "activity", "pending_dbg"]
    default = event("l1.vmentry")
    assert binary.encode_record(default) == bytes([binary.encode_record(default)[0]]) + bytes(binary.RECORD - 1)
    assert binary.RECORD == 14


@pytest.mark.parametrize("text", [
    "l1.vmentry inject=ev(3,#UD,ec=0x0) interruptibility=both if=0 pending_dbg=bs",
    "l1.vmentry inject=ev(7,0x0)",
    "l1.vmentry inject=ev(1,0x20)",
    "l1.vmentry inject=ev(2,0x5)",
    "l1.vmentry inject=ev(3,#GP)",
    "l1.vmentry inject=ev(3,0x2)",
    "l1.vmentry inject=ev(3,#GP,ec=0x0,reserved=0x81)",
    "l1.vmentry inject=#GP(0xdeadbeef) interruptibility=movss if=1",
    "l1.vmentry inject=intr(0x20) interruptibility=none pending_dbg=b0",
])
def test_text_and_binary_round_trip(text):
    s = sc("vmx", text)
    assert parse_scenario(format_scenario(s)) == s
    assert binary.decode(binary.encode(s)) == s
    assert format_scenario(s).splitlines()[1] == text


def test_first_form_event_records_decode_as_before():
    """The EVENT value grew from 4 bytes by appending: a record written by
    the first form (form byte, vector, error code) reads the same, the
    deliver-error-code bit following the vector as it did."""
    kind = bytes([binary._KIND_INDEX["l1.vmentry"]])
    gp, ud = binary._EXC_INDEX[13], binary._EXC_INDEX[6]

    def dec(body: bytes):
        return binary.decode(b"\0" + (kind + body).ljust(binary.RECORD, b"\0")).events[0]["inject"]

    assert dec(bytes([3, gp, 0x10, 0])) == exception(13, 0x10)
    assert dec(bytes([3, ud, 0x10, 0])) == exception(6)
    assert dec(bytes([2, 7, 9, 9])) == Ev(EvType.NMI, 2)
    assert dec(bytes([1, 0x20, 1, 0])) == Ev(EvType.EXT_INTR, 0x20)
    assert dec(bytes([0, 0, 0, 0])) is None


def test_short_spelling_keeps_its_meaning():
    """`inject=#GP` is the error code a #GP pushes (0), as before; an error
    code on a vector that pushes none needs `ev(...)`."""
    assert sc("vmx", "l1.vmentry inject=#GP").events[0]["inject"] == exception(13, 0)
    assert sc("vmx", "l1.vmentry inject=#UD").events[0]["inject"] == exception(6)
    with pytest.raises(ScenarioError, match="pushes no error code"):
        sc("vmx", "l1.vmentry inject=#UD(0x0)")
    with pytest.raises(ScenarioError, match="0..7"):
        sc("vmx", "l1.vmentry inject=ev(8,0x0)")
    with pytest.raises(ScenarioError, match="0..0xffffffff"):
        sc("vmx", "l1.vmentry inject=#GP(0x100000000)")


def test_svm_has_one_shadow_bit_and_no_pending_debug_field():
    """SVM: `movss` and `both` are the one INTERRUPT_SHADOW bit, `sti`;
    `pending_dbg=` is VMX's: the binary form maps them, the text refuses."""
    raw = binary.encode(sc("vmx", "l1.vmentry interruptibility=movss pending_dbg=bs"))
    svm = binary.decode(bytes([raw[0] | 1]) + raw[1:])
    assert svm.events[0].args[2:] == ("sti", "keep", "keep", "none")
    with pytest.raises(ScenarioError, match="INTERRUPT_SHADOW"):
        sc("svm", "l1.vmentry interruptibility=movss")
    with pytest.raises(ScenarioError, match="pending_dbg"):
        sc("svm", "l1.vmentry pending_dbg=b0")


# ----------------------------------------------------------- the reference --

#: SDM 26.2.1.3 (VMfailValid(7)): each check of `avmx.entry_control_error`.
VMX_CONTROL_FAILURES = [
    "ev(1,0x20)",  # type 1 reserved
    "ev(7,0x1)",  # other event: vector 0 only
    "ev(2,0x5)",  # NMI: vector 2
    "ev(3,0x20)",  # hardware exception: vector at most 31
    "ev(3,#UD,ec=0x0)",  # deliver-error-code bit, independent of the vector
    "ev(3,#GP)",
    "ev(0,0x20,ec=0x0)",
    "ev(3,#GP,ec=0x0,reserved=0x1)",  # bits 30:12
    "#GP(0xdeadbeef)",  # error code bits 31:16 (kvm-unit-tests 65d7e712)
]


@pytest.mark.parametrize("inject", VMX_CONTROL_FAILURES)
def test_vmx_control_checks(inject):
    for out in outcomes("reference", sc("vmx", f"l1.vmentry inject={inject}")):
        assert l1(out) == [VMFAIL] and out.final.level == 1


def test_vmx_error_code_bits_15_and_below_pass():
    out, = outcomes("reference", sc("vmx", "l1.vmentry inject=#GP(0xffff)"))
    assert l2(out) == [Delivered(2, exception(13, 0xFFFF))]


def test_vmx_type_7_vector_0_is_a_pending_mtf_exit():
    """SDM 24.8.3 Table 24-13: type 7, vector 0, a pending MTF VM exit
    before L2's first instruction; L2 keeps its blocking by STI (the entry
    is not vectoring, SDM 26.6.1)."""
    s = sc("vmx", "l1.vmentry inject=ev(7,0x0) interruptibility=sti if=1")
    out, = outcomes("reference", s)
    assert l1(out) == [VmExit(avmx.reason_name(avmx.MONITOR_TRAP_FLAG))] and l2(out) == []


@pytest.mark.parametrize("body", [
    "l1.vmentry interruptibility=both",  # STI and MOV SS together
    "l1.vmentry interruptibility=sti if=0",  # STI blocking with IF=0
    "l1.vmentry interruptibility=sti pending_dbg=bs",  # BS with blocking, TF=0
    "l1.vmentry interruptibility=movss pending_dbg=bs",
    "l1.vmentry inject=intr(0x20) interruptibility=sti",  # interrupt under blocking
    "l1.vmentry inject=intr(0x20) if=0",
    "l1.vmentry inject=nmi interruptibility=movss",  # NMI under MOV-SS blocking
])
def test_vmx_guest_state_checks(body):
    """SDM 26.3.1.4-5: a VM-entry failure, exit reason 33 with bit 31."""
    for out in outcomes("reference", sc("vmx", body)):
        assert l1(out) == [BAD_STATE]


def test_vmx_nmi_under_sti_blocking_is_either():
    """SDM 26.3.1.5 (V3-1105): a processor may require no STI blocking for
    an NMI injection, others not."""
    got = {tuple(l1(o) + l2(o)) for o in outcomes("reference", sc("vmx", "l1.vmentry inject=nmi interruptibility=sti"))}
    assert got == {(BAD_STATE,), (Delivered(2, Ev(EvType.NMI, 2)),)}


def test_l1_written_blocking_holds_interrupts_in_l2():
    """A valid edit takes effect: STI blocking holds an interrupt for one
    instruction, IF=0 for good (SDM 6.8.1, 6.8.3)."""
    out, = outcomes("reference", sc("vmx", "l1.vmentry if=0\nirq 0x20\nl2.vmcall"))
    assert l2(out) == [] and out.final.irq_pending == (0x20,)


def test_pending_debug_exception_after_entry_is_either():
    """SDM 26.6.3 is on a page the stored copy lacks: the #DB trap or
    nothing."""
    got = {tuple(l2(o)) for o in outcomes("reference", sc("vmx", "l1.vmentry pending_dbg=b0"))}
    assert got == {(), (Delivered(2, exception(1)),)}


@pytest.mark.parametrize("inject", ["ev(3,0x2)", "ev(3,0x20)", "ev(1,0x20)", "ev(5,#DB)", "ev(6,#BP)",
                                    "ev(7,0x0)"])
def test_svm_illegal_event_injection(inject):
    """APM 15.20: a reserved type, or type 3 with a vector that is no
    exception (vector 2 named): VMEXIT_INVALID."""
    out, = outcomes("reference", sc("svm", f"l1.vmentry inject={inject}"))
    assert l1(out) == [INVALID]


def test_svm_ev_decides_the_error_code():
    """APM 15.20: EV says whether the exception pushes an error code, all
    32 bits of ERRORCODE; no check on it."""
    out, = outcomes("reference", sc("svm", "l1.vmentry inject=ev(3,#UD,ec=0xdeadbeef)"))
    assert l2(out) == [Delivered(2, exception(6, 0xDEADBEEF))]
    out, = outcomes("reference", sc("svm", "l1.vmentry inject=ev(3,#GP)"))
    assert l2(out) == [Delivered(2, exception(13))]


@pytest.mark.parametrize("inject", ["ev(3,#GP,ec=0x0,reserved=0x1)", "ev(0,0x20,ec=0x0)"])
def test_svm_reserved_bits_and_ev_on_interrupts_are_undefined(inject):
    out, = outcomes("reference", sc("svm", f"l1.vmentry inject={inject}"))
    assert out.undefined_from == 0


def test_svm_int_state_is_not_checked():
    """APM 15.5.1 lists no consistency check on INTERRUPT_SHADOW: the entry
    with an interrupt injected under it and IF=0 succeeds."""
    out, = outcomes("reference", sc("svm", "l1.vmentry inject=intr(0x20) interruptibility=sti if=0"))
    assert l2(out) == [Delivered(2, Ev(EvType.EXT_INTR, 0x20))]


# ------------------------------------------------- the ports' real paths --

CASES = {
    "vmx": [f"l1.vmentry inject={i}" for i in VMX_CONTROL_FAILURES] + [
        "l1.vmentry inject=ev(7,0x0)",
        "l1.vmentry interruptibility=both",
        "l1.vmentry interruptibility=sti if=0",
        "l1.vmentry interruptibility=sti pending_dbg=bs",
        "l1.vmentry inject=intr(0x20) interruptibility=movss",
        "l1.vmentry inject=nmi interruptibility=movss",
        "l1.vmentry pending_dbg=b0",
        "l1.vmentry if=0\nirq 0x20\nl2.vmcall",
        "l1.vmentry interruptibility=sti if=0\nl1.vmentry interruptibility=keep if=1",
    ],
    "svm": ["l1.vmentry inject=ev(3,0x2)", "l1.vmentry inject=ev(3,0x20)", "l1.vmentry inject=ev(1,0x20)",
            "l1.vmentry inject=ev(5,#DB)", "l1.vmentry inject=ev(7,0x0)",
            "l1.vmentry inject=ev(3,#UD,ec=0xdeadbeef)", "l1.vmentry inject=#GP(0xdeadbeef)",
            "l1.vmentry inject=intr(0x20) interruptibility=sti if=0",
            "l1.vmentry if=0\nirq 0x20\nl2.vmcall"],
}


@pytest.mark.parametrize("name", PORTS)
@pytest.mark.parametrize("vendor,body", [(v, b) for v, bodies in CASES.items() for b in bodies])
def test_ports_agree(name, vendor, body):
    assert agreement.agrees(name, sc(vendor, body))


def _notes(name: str, s) -> list[str]:
    return [t for _, t in outcomes(name, s)[0].notes]


@pytest.mark.parametrize("name", PORTS)
def test_vmx_kvm_checks_the_controls_itself(name, monkeypatch):
    """nested_check_vm_entry_controls fails a type-1 injection before the
    CPU sees it: VMfailValid(7) from nested_vmx_fail, not a late failure
    of vmcs02 (the CPU is never asked)."""
    from impls.hw.cpu import Cpu

    calls = []
    real = Cpu.vmx_run
    monkeypatch.setattr(Cpu, "vmx_run", lambda cpu, vmcs: calls.append(vmcs.level) or real(cpu, vmcs))
    out, = outcomes(name, sc("vmx", "l1.vmentry inject=ev(1,0x20)"))
    assert l1(out) == [VMFAIL] and 2 not in calls


@pytest.mark.parametrize("name", PORTS)
def test_vmx_guest_state_is_the_cpus_check(name, monkeypatch):
    """KVM has no software check on interruptibility (nested_vmx_check_
    guest_state looks at the activity state only): vmcs02's entry fails on
    the CPU and nested_vmx_reflect_vmexit gives L1 the failed entry."""
    from impls.hw.cpu import Cpu

    calls = []
    real = Cpu.vmx_run
    monkeypatch.setattr(Cpu, "vmx_run", lambda cpu, vmcs: calls.append(vmcs.level) or real(cpu, vmcs))
    out, = outcomes(name, sc("vmx", "l1.vmentry interruptibility=both"))
    assert l1(out) == [BAD_STATE] and 2 in calls


@pytest.mark.parametrize("name", PORTS)
def test_vmx_mtf_exit_is_reflected_to_l1(name):
    """nested_vmx_l1_wants_exit: the MTF exit of an injected type 7 is L1's
    (nested_vmx_exit_handled_mtf) though L1 set no monitor trap flag."""
    out, = outcomes(name, sc("vmx", "l1.vmentry inject=ev(7,0x0)"))
    assert l1(out) == [VmExit("MONITOR_TRAP_FLAG")]


@pytest.mark.parametrize("name", PORTS)
def test_svm_kvm_leaves_eventinj_to_the_cpu(name):
    """5.11 to 6.18 check nothing in EVENTINJ (nested_vmcb_checks): the
    CPU's VMRUN of vmcb02 exits with VMEXIT_INVALID, which
    nested_svm_intercept gives to L1; Yosry Ahmed's 2026 series checks it
    in software first (impls.exp_nsvm_v7)."""
    s = sc("svm", "l1.vmentry inject=ev(3,0x2)")
    out, = outcomes(name, s)
    assert l1(out) == [INVALID]
    assert not any("nested_svm_check_event_inj" in n for n in _notes(name, s))


def test_svm_2026_series_checks_eventinj_in_software(monkeypatch):
    monkeypatch.setitem(api.IMPLEMENTATIONS, "exp-nsvm-v7", "impls.exp_nsvm_v7:NsvmV7")
    api._loaded.pop("exp-nsvm-v7", None)
    s = sc("svm", "l1.vmentry inject=ev(3,0x2)")
    try:
        out, = outcomes("exp-nsvm-v7", s)
        assert l1(out) == [INVALID]
        assert any("nested_svm_check_event_inj" in n for n in _notes("exp-nsvm-v7", s))
    finally:
        api._loaded.pop("exp-nsvm-v7", None)


# ------------------------------- 32-bit error codes from KVM_SET_VCPU_EVENTS --

SET_BIG = "user.set_exception #GP ec=0xdeadbeef injected=1"


def test_set_exception_takes_32_bits_in_text_and_16_in_binary():
    """struct kvm_vcpu_events' error code is a u32: the text form holds it;
    the binary form keeps `exception`-sized records, the low 16 bits."""
    s = sc("vmx", SET_BIG)
    assert s.events[0]["ec"] == 0xDEADBEEF and parse_scenario(format_scenario(s)) == s
    assert binary.decode(binary.encode(s)).events[0]["ec"] == 0xBEEF
    with pytest.raises(ScenarioError, match="0xffffffff"):
        sc("vmx", "user.set_exception #GP ec=0x100000000 injected=1")
    with pytest.raises(ScenarioError, match="0xffff"):
        sc("vmx", "exception #GP ec=0x10000")


def test_reference_32_bit_error_codes():
    """VMX: bits 31:16 are reserved in every error code these exceptions
    push (SDM 6.13, 4.7): the scenario leaves the architecture, only KVM's
    alarms are judged after it.  SVM: delivered with all 32 bits."""
    out, = outcomes("reference", sc("vmx", SET_BIG))
    assert out.undefined_from == 0
    out, = outcomes("reference", sc("svm", SET_BIG))
    assert l1(out) == [Delivered(1, exception(13, 0xDEADBEEF))]


@pytest.mark.parametrize("name,alarm", [("prepatch", True), ("postpatch", True), ("upstream", False),
                                        ("current", False)])
def test_what_vmx_keeps_of_a_32_bit_error_code(name, alarm):
    """5.11 writes all 32 bits into VM_ENTRY_EXCEPTION_ERROR_CODE, which the
    CPU refuses (SDM 26.2.1.3): VM-Fail, KVM_EXIT_FAIL_ENTRY, the VM dies.
    6.1's vmx_inject_exception writes the low 16 bits (0xbeef is
    delivered), as 6.18's does."""
    out, = outcomes(name, sc("vmx", SET_BIG))
    if alarm:
        assert out.alarms and out.alarms[0].startswith("KVM_EXIT_FAIL_ENTRY") and l1(out) == []
        assert not agreement.agrees(name, sc("vmx", SET_BIG))
    else:
        assert l1(out) == [Delivered(1, exception(13, 0xBEEF))]
        assert agreement.agrees(name, sc("vmx", SET_BIG))


@pytest.mark.parametrize("name", ("prepatch", "postpatch", "upstream", "current"))
def test_svm_keeps_the_32_bit_error_code(name):
    """EVENTINJ's ERRORCODE has 32 bits (APM 15.20): every port agrees."""
    assert agreement.agrees(name, sc("svm", SET_BIG))


@pytest.mark.parametrize("body, rule", [
    ("l1.vmentry inject=#GP(0x0) activity=hlt\n", "an event the HLT activity state does not accept"),
    ("l1.vmentry interruptibility=both\n", "interruptibility state inconsistent"),
    ("mov_ss\nl1.vmentry\n", "events blocked by MOV SS"),
])
def test_reference_notes_the_rule_a_failed_entry_breaks(body, rule):
    """A failed VM entry is noted with its rule (explain shows it; notes
    are never compared)."""
    out = api.load("reference").run(parse_scenario(f"evdiff 1 vendor=vmx\n{body}"))
    outs = out.outcomes if isinstance(out, api.Allowed) else (out,)
    assert all(any(t.startswith(f"VM entry fails: {rule}") for _, t in o.notes) for o in outs)


def test_l1s_writes_stay_when_vmlaunch_fails_under_mov_ss_blocking():
    """L1 writes L2's state (VMWRITE) before VMLAUNCH; a VMLAUNCH that fails
    with VMfailValid(26) (events blocked by MOV SS) undoes none of it: the
    next entry runs L2 with IF=0, so the pending interrupt waits.  The
    reference dropped the writes, and every port diverged."""
    s = parse_scenario("evdiff 1 vendor=vmx\ncli\nirq 0x20\nmov_ss\nl1.vmentry if=0\nl1.vmentry\n")
    out = api.load("reference").run(s)
    assert out.l1 == ((3, EntryFailed("VMfailValid(26)")),)
    assert out.l2 == () and out.final.irq_pending == (0x20,) and out.final.level == 2
    assert agreement.agrees("prepatch", s) and agreement.agrees("current", s)


def test_no_sti_blocking_after_a_vectoring_entry_even_if_its_delivery_triple_faults():
    """SDM 26.6.1: a vectoring VM entry leaves no blocking by STI or MOV SS.
    The simulated CPU kept vmcs12's STI blocking when the injected INT n's
    delivery ended in a triple fault, so that exit saved it and L1's next
    entry, injecting an interrupt, failed for every port (the reference:
    another triple fault)."""
    s = parse_scenario("evdiff 1 vendor=vmx\nl2.idt_limit 0\n"
                       "l1.vmentry inject=int(0x80) insn_len=2 interruptibility=sti\nl1.vmentry inject=intr(0x20)\n")
    out = api.load("reference").run(s)
    assert [o.reason for _, o in out.l1] == ["TRIPLE_FAULT", "TRIPLE_FAULT"]
    assert all(agreement.agrees(p, s) for p in ("prepatch", "postpatch", "upstream", "current"))
