"""Guest-executed software interrupts and exceptions: `int N`, `int3`,
`into`, `icebp` (issue 14, first part).

INT n raises a software interrupt (VMX / SVM type 4, 2 bytes), INT3 / INTO a
software exception (VMX type 6, SVM type 3, 1 byte), INT1 / ICEBP #DB as a
privileged software exception (VMX type 5, SVM type 3, 1 byte): the language
carries them in both forms, the reference gives each its manual's rules
(`impls.arch.soft_interrupt`, `impls.arch.INT1`), the simulated CPU hands KVM
the exit information and instruction lengths of the manuals, and the ports
keep KVM's code, divergences included.
"""
from __future__ import annotations

import pytest

import agreement

from fuzz import binary, seeds
from fuzz.oracle import compare
from fuzz.scenario import Config, Event, Scenario, event
from fuzz.text import format_scenario, parse_scenario
from impls import api, arch
from impls.api import Delivered, VmExit
from impls.arch import Ev, EvType
from impls.arch import svm as asvm
from impls.arch import vmx as avmx
from impls.prepatch.driver import Driver as Driver511
from impls.prepatch.vcpu import Vcpu as Vcpu511
from impls.upstream.driver import Driver as Driver61
from impls.upstream.vcpu import Vcpu as Vcpu61

PORTS = ("prepatch", "postpatch", "postpatch-v2", "upstream", "current")
#: 5.11 and the RFC (both postings) keep 5.11's svm_complete_interrupts.
SVM_511 = ("postpatch", "postpatch-v2", "prepatch")
KINDS = ("int 0x80", "int3", "into", "icebp")
DB, NMI_VEC, BP, OF, UD, NP, GP = 1, 2, 3, 4, 6, 11, 13


def scenario(vendor: str, body: str):
    paging = "ept" if vendor == "vmx" else "npt"
    return parse_scenario(f"evdiff 1 vendor={vendor} {paging}=on\n{body}")


def outcome(name: str, s):
    out = api.load(name).run(s)
    if isinstance(out, api.Allowed):
        (out,) = out.outcomes
    return out


def l1_trace(name: str, s) -> list:
    return [o for _, o in outcome(name, s).l1]


def l2_trace(name: str, s) -> list:
    return [o for _, o in outcome(name, s).l2]


def vmx_type(ev: Ev) -> int:
    return avmx.encode(ev)[0] >> 8 & 7


def svm_type(ev: Ev) -> int:
    return asvm.encode(ev)[0] >> 8 & 7


# -------------------------------------------------------------- language --


@pytest.mark.parametrize("line", ["int 0x80", "int 0x3", "int3", "into", "icebp"])
def test_new_kinds_round_trip_in_both_forms(line):
    s = parse_scenario(f"evdiff 1 vendor=svm\n{line}\n")
    text = format_scenario(s)
    assert text.splitlines()[-1] == line
    assert parse_scenario(text) == s
    assert binary.decode(binary.encode(s)) == s


def test_int_takes_any_vector_and_defaults_to_0x80():
    assert event("int") == Event("int", (0x80,))
    assert [event("int", v)["vector"] for v in (0, 14, 255)] == [0, 14, 255]
    data = b"\0" + binary.encode_record(Event("int", (0xFE,)))
    assert binary.decode(data).events == (Event("int", (0xFE,)),)


@pytest.mark.parametrize("vector,kind", [(BP, "int3"), (OF, "into")])
def test_exception_bp_and_of_are_int3_and_into(vector, kind):
    """INT3 and INTO are the only sources of #BP and #OF (SDM Table 6-1):
    one event, in every form."""
    assert event("exception", vector) == Event(kind)
    assert parse_scenario(f"evdiff 1\nexception {arch.mnemonic(vector)}\n").events == (Event(kind),)
    raw = Event("exception", (vector, 0, 0))  # as a record may hold it
    assert binary.decode(b"\0" + binary.encode_record(raw)).events == (Event(kind),)


def test_older_records_keep_their_bytes():
    """New kinds go last in SPECS: an old kind's canonical record is unchanged."""
    kinds = [s.kind for s in binary.SPECS]
    first = kinds.index("int")
    assert kinds[first:first + 4] == ["int", "int3", "into", "icebp"] and first == 33
    assert binary.encode_record(event("run"))[0] == kinds.index("run") == 32


def test_dictionary_and_mutator_records_hold_the_new_kinds():
    entries = seeds.dictionary()
    for kind in ("int", "int3", "into", "icebp"):
        assert f"kind_{kind}=" in entries
    kinds = {binary.decode(b"\0" + r).events[0].kind for r in seeds.language_records()}
    assert {"int", "int3", "into", "icebp"} <= kinds
    assert seeds.DICTIONARY.read_text() == seeds.dictionary()


# ------------------------------------------------------------- reference --


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
@pytest.mark.parametrize("line,delivered,ret", [
    ("int 0x80", Ev(EvType.SOFT_INT, 0x80), 2),
    ("int 0xe", Ev(EvType.SOFT_INT, 14), 2),  # no error code on #PF's vector (SDM 6.4.2)
    ("int3", Ev(EvType.HW_EXCEPTION, BP), 1),
    ("into", Ev(EvType.HW_EXCEPTION, OF), 1),
    ("icebp", Ev(EvType.HW_EXCEPTION, DB), 1),  # a handler sees #DB (Delivered)
])
def test_reference_delivers_each_kind(vendor, line, delivered, ret):
    """Each returns past its instruction (SDM2 INT n/INTO/INT3/INT1): the
    return address pushed is the instruction's length on (`Delivered.ret`)."""
    s = scenario(vendor, f"{line}\n")
    assert l1_trace("reference", s) == [Delivered(1, delivered, ret)]
    for port in PORTS:
        assert l1_trace(port, s) == [Delivered(1, delivered, ret)], port


def test_reference_into_is_ud_in_64_bit_mode():
    """SDM2 INTO, IA-32e mode: #UD in 64-bit mode; userspace sets no #OF there."""
    s = scenario("vmx", "l1.mode long\ninto\n")
    assert l1_trace("reference", s) == [Delivered(1, Ev(EvType.HW_EXCEPTION, UD))]
    assert all(agreement.agrees(p, s) for p in PORTS)
    assert not arch.possible.exception_settable(OF, arch.Mode.LONG)


def test_reference_int_2_does_not_block_nmis():
    """INT 2 runs the NMI handler without NMI blocking (SDM 6.3.3): an NMI
    that follows is delivered at once."""
    s = scenario("vmx", "int 0x2\nnmi\n")
    assert l1_trace("reference", s) == [Delivered(1, Ev(EvType.SOFT_INT, NMI_VEC), 2), Delivered(1, arch.events.NMI)]


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
@pytest.mark.parametrize("setup,fault", [("l1.idt 0x80", NP), ("l1.idt 0x80 gate=bad_type", GP),
                                         ("l1.idt_limit 0x80", GP)])
def test_reference_gate_fault_during_int_n_has_ext_clear(vendor, setup, fault):
    """SDM2 INT n: error_code(vector, idt=1, EXT) with EXT=0 for a software
    interrupt; AMD sets EXT only for INTR / NMI (arch.ext_bit)."""
    s = scenario(vendor, f"{setup}\nint 0x80\n")
    assert l1_trace("reference", s) == [Delivered(1, Ev(EvType.HW_EXCEPTION, fault, 0x80 * 8 + 2))]


@pytest.mark.parametrize("vendor,ext", [("vmx", 1), ("svm", 0)])
def test_reference_gate_fault_during_icebp_has_ext_set_on_vmx(vendor, ext):
    """SDM2 INT n: "otherwise (including INT1), EXT is 1"; AMD records INT1
    as an exception (APM 15.7.2), EXT=0 as for any exception (arch.ext_bit)."""
    s = scenario(vendor, "l1.idt 1\nicebp\n")
    assert l1_trace("reference", s) == [Delivered(1, Ev(EvType.HW_EXCEPTION, NP, DB * 8 + 2 + ext))]


@pytest.mark.parametrize("line,typ,vector", [("int3", 6, BP), ("into", 6, OF), ("icebp", 5, DB)])
def test_reference_vmx_intercepted_soft_exceptions_exit_with_types_6_and_5(line, typ, vector):
    """SDM 25.2: the exception bitmap applies to INT1, INT3 and INTO; SDM
    27.2.2: exit interruption type 6 for INT3 / INTO, 5 for INT1 (arch.INT1)."""
    s = scenario("vmx", f"l1.intercept exceptions=#DB,#BP,#OF\nl1.vmentry\n{line}\n")
    (exit_,) = l1_trace("reference", s)
    assert exit_.reason == "EXCEPTION_NMI" and exit_.info.vector == vector and exit_.vectoring is None
    assert vmx_type(exit_.info) == typ


def test_reference_svm_icebp_does_not_hit_the_db_intercept():
    """APM 15.12.2: INT1 does not trigger the #DB intercept."""
    s = scenario("svm", "l1.intercept exceptions=#DB\nl1.vmentry\nicebp\n")
    assert l1_trace("reference", s) == []
    assert l2_trace("reference", s) == [Delivered(2, Ev(EvType.HW_EXCEPTION, DB), 1)]


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_reference_int_n_is_never_intercepted(vendor):
    """INT n on an exception's vector is no exception (SDM 25.2 footnote,
    APM 15.13): the exception bitmap / intercepts do not catch it."""
    s = scenario(vendor, "l1.intercept exceptions=#DB,#BP,#OF,#PF\nl1.vmentry\nint 0xe\nint 0x3\n")
    assert l1_trace("reference", s) == []
    assert l2_trace("reference", s) == [Delivered(2, Ev(EvType.SOFT_INT, 14), 2), Delivered(2, Ev(EvType.SOFT_INT, 3), 2)]


@pytest.mark.parametrize("vendor,typ", [("vmx", 4), ("svm", 4)])
def test_reference_exit_during_int_n_delivery_reports_type_4(vendor, typ):
    """SDM 27.2.3: IDT-vectoring type 4; APM 15.7.2: EXITINTINFO type 4 for
    INTn only."""
    s = scenario(vendor, "l1.intercept exceptions=#NP\nl2.idt 0x80\nl1.vmentry\nint 0x80\n")
    (exit_,) = l1_trace("reference", s)
    assert exit_.info.vector == NP and exit_.info.error_code == 0x80 * 8 + 2
    assert exit_.vectoring == Ev(EvType.SOFT_INT, 0x80)
    assert (vmx_type if vendor == "vmx" else svm_type)(exit_.vectoring) == typ


@pytest.mark.parametrize("vendor,typ", [("vmx", 5), ("svm", 3)])
def test_reference_exit_during_icebp_delivery_reports_its_type(vendor, typ):
    """SDM 27.2.3: IDT-vectoring type 5 for INT1; APM 15.7.2: INT1 is an
    exception (type 3) in EXITINTINFO, which L1 reads as #DB."""
    s = scenario(vendor, "l1.intercept exceptions=#NP\nl2.idt 1\nl1.vmentry\nicebp\n")
    (exit_,) = l1_trace("reference", s)
    assert exit_.vectoring.vector == DB
    assert (vmx_type if vendor == "vmx" else svm_type)(exit_.vectoring) == typ
    if vendor == "svm":
        assert exit_.vectoring == Ev(EvType.HW_EXCEPTION, DB)


# ----------------------------------------------------------------- ports --


@pytest.mark.parametrize("port", PORTS)
@pytest.mark.parametrize("vendor", ["vmx", "svm"])
@pytest.mark.parametrize("line", KINDS)
def test_l0_fixup_during_l2_soft_event_is_invisible(port, vendor, line):
    """An EPT violation / NPF L0 fixes during the delivery of L2's INT n,
    INT3, INTO or INT1: L2 sees its event once, as the reference says (VMX
    KVM re-injects types 4 and 6 with the instruction length and turns INT1
    into a hardware #DB before it is delivered; 6.1 SVM re-injects, 5.11 SVM
    lets the guest execute INT n / INT3 / INTO again), returning past the
    instruction -- except INT1 on SVM: EXITINTINFO calls its #DB an
    exception (APM 15.7.2), KVM re-injects it as a fault and the handler
    returns to the ICEBP (APM 15.20: event injection cannot inject it, the
    VMM must emulate it; no KVM does)."""
    s = scenario(vendor, f"l1.vmentry\nl0.mmu_fixup delivery\n{line}\n")
    (delivered,) = l2_trace(port, s)
    if line == "icebp" and vendor == "svm":
        assert delivered == Delivered(2, Ev(EvType.HW_EXCEPTION, DB), 0)
        assert l2_trace("reference", s) == [Delivered(2, Ev(EvType.HW_EXCEPTION, DB), 1)]
    else:
        assert agreement.agrees(port, s)
        assert delivered.ret == arch.INSTRUCTION_LENGTH[EvType.SOFT_INT if line.startswith("int ") else
                                                        EvType.SOFT_EXCEPTION]


def _run(driver_cls, vcpu_cls, s):
    d = driver_cls(s, vcpu_cls)
    d.run_events()
    return d


@pytest.mark.parametrize("driver_cls,vcpu_cls", [(Driver511, Vcpu511), (Driver61, Vcpu61)])
@pytest.mark.parametrize("level", ["", "l1.vmentry\n"])
def test_vmx_reinjects_int_n_with_its_length(driver_cls, vcpu_cls, level):
    """The exit during INT n's delivery reports type 4 and length 2 (SDM
    27.2.3-4); __vmx_complete_interrupts keeps the length and
    vmx_inject_irq hands it back as the VM-entry instruction length."""
    d = _run(driver_cls, vcpu_cls, scenario("vmx", f"{level}l0.mmu_fixup delivery\nint 0x80\n"))
    assert d.vcpu.arch.event_exit_inst_len == arch.INSTRUCTION_LENGTH[EvType.SOFT_INT] == 2
    vmcs = (d.vcpu.vmx.vmcs02 if level else d.vcpu.vmx.vmcs01).vmcs
    assert vmcs.entry_instruction_len == 2


@pytest.mark.parametrize("driver_cls,vcpu_cls", [(Driver511, Vcpu511), (Driver61, Vcpu61)])
@pytest.mark.parametrize("line,length", [("icebp", 1), ("int3", 1)])
def test_vmx_intercepted_soft_exception_exit_reports_its_length(driver_cls, vcpu_cls, line, length):
    """SDM 27.2.4: the exit on INT1 / INT3 reports the instruction's length;
    prepare_vmcs12 copies vmcs02's field into vmcs12."""
    s = scenario("vmx", f"l1.intercept exceptions=#DB,#BP\nl1.vmentry\n{line}\n")
    d = _run(driver_cls, vcpu_cls, s)
    assert d.vcpu.vmx.nested.vmcs12.vm_exit_instruction_len == length


@pytest.mark.parametrize("line", ["int 0x80", "int3"])
def test_511_svm_executes_the_soft_event_again_after_an_npf(line):
    """5.11's svm_complete_interrupts drops INTn and INT3 / INTO from
    EXITINTINFO for the guest to execute them again: an interrupt pending
    meanwhile comes first, and with no handler's IRET modelled the soft event
    is gone.  The reference delivers INT n (its gate clears IF, so the
    interrupt stays pending).  Fixed in 5.19 by 7e5b5ef8dca3 ("KVM: SVM:
    Re-inject INTn instead of retrying the insn on "failure"") and
    6ef88d6e36c2 ("KVM: SVM: Re-inject INT3/INTO instead of retrying the
    instruction"): 6.1 and 6.18 agree."""
    s = scenario("svm", f"l1.vmentry\ncli\nirq 0x30\nsti\nl0.mmu_fixup delivery\n{line}\n")
    report = compare(s, ["reference", *PORTS])
    (cause,) = report.causes
    assert cause.impls == SVM_511
    what = "INTn" if line.startswith("int ") else "soft exception"
    assert cause.signature == f"svm svm_complete_interrupts: {what} N in EXITINTINFO is dropped, " \
                              "the instruction executes again"
    assert l2_trace("prepatch", s) == [Delivered(2, Ev(EvType.EXT_INTR, 0x30))]
    for port in ("upstream", "current"):
        assert agreement.agrees(port, s)


@pytest.mark.parametrize("line,vector", [("int 0x80", 0x80), ("int3", BP)])
def test_511_svm_reflects_an_exit_during_a_soft_event_without_exitintinfo(line, vector):
    """L1 intercepts the #NP met delivering L2's INT n / INT3: 5.11's
    svm_complete_interrupts has dropped the event, so nested_svm_vmexit
    (nested_vmcb_save_pending_event) finds nothing to put in vmcb12's
    EXITINTINFO.  6.1 and 6.18 keep it (the same fixes)."""
    s = scenario("svm", f"l1.intercept exceptions=#NP\nl2.idt {vector:#x}\nl1.vmentry\n{line}\n")
    expected = l1_trace("reference", s)
    assert expected[0].vectoring.vector == vector
    for port in SVM_511:
        got = l1_trace(port, s)
        assert got == [VmExit(expected[0].reason, expected[0].info, None)], port
    for port in ("upstream", "current"):
        assert agreement.agrees(port, s)


def test_vmx_kvm_turns_icebp_into_a_hardware_db():
    """L0 intercepts #DB: on an ICEBP exit from L2 that L1 does not want,
    handle_exception_nmi skips the ICEBP (is_icebp) and queues #DB, which
    KVM injects as a hardware exception (type 3).  A fault L1 intercepts
    during its delivery then shows IDT-vectoring type 3 where the CPU reports
    type 5 (SDM 27.2.3).  Every port."""
    s = scenario("vmx", "l1.intercept exceptions=#NP\nl2.idt 1\nl1.vmentry\nicebp\n")
    (cause,) = compare(s, ["reference", *PORTS]).causes
    assert cause.impls == tuple(sorted(PORTS))
    assert cause.signature == "vmx handle_exception_nmi: ICEBP skipped, its #DB queued as a hardware exception"
    (exit_,) = l1_trace("prepatch", s)
    assert exit_.vectoring == Ev(EvType.HW_EXCEPTION, DB)


@pytest.mark.parametrize("port", PORTS)
def test_icebp_in_l1_is_skipped_once(port):
    """KVM's is_icebp skip moves RIP past the ICEBP (the simulated CPU then
    has nothing to execute again): L1 handles one #DB, then runs on."""
    s = scenario("vmx", "icebp\nsti\nirq 0x30\n")
    assert l1_trace(port, s) == l1_trace("reference", s) == [
        Delivered(1, Ev(EvType.HW_EXCEPTION, DB), 1), Delivered(1, Ev(EvType.EXT_INTR, 0x30))]


def test_scenario_of_every_new_kind_runs_in_every_implementation():
    for vendor in ("vmx", "svm"):
        for nested in (False, True):
            events = ((event("l1.vmentry"),) if nested else ()) + tuple(
                event(k) for k in ("int", "int3", "into", "icebp"))
            s = Scenario(Config(vendor=vendor), events)
            for name in ("reference", *PORTS):
                assert outcome(name, s).livelock is None, (vendor, nested, name)
