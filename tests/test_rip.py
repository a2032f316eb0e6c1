"""Where the guest resumes (issue 14): the return address a delivery pushes
(`Delivered.ret`), the RIP an exit saves and the instruction length / nRIP
it reports (`VmExit.ret`, `VmExit.length`), and `l1.vmentry insn_len=`.

Each rule of the reference is checked on the smallest scenario that shows
it; the ports on the re-injection paths where KVM's trees differ: VMX
re-injects a software interrupt with the instruction length of the exit,
5.11's SVM executes INT3 / INTO again where 6.1 re-injects them with the
next_rip it recorded, and 5.11 never hands L1's next_rip to the CPU.
"""
from __future__ import annotations

import pytest

import agreement

from fuzz import binary
from fuzz.oracle import abstract, compare, shape
from fuzz.scenario import Event, event
from fuzz.text import format_scenario, parse_scenario
from impls import api
from impls.api import Allowed, Delivered, EntryFailed, Undefined, VmExit
from impls.arch import Ev, EvType
from impls.arch.events import exception

PORTS = ("prepatch", "postpatch", "postpatch-v2", "upstream", "current")
#: 5.11 and the RFC (both postings): 5.11's SVM event paths.
SVM_511 = ("prepatch", "postpatch", "postpatch-v2")
SVM_61 = ("upstream", "current")
INT80 = Ev(EvType.SOFT_INT, 0x80)
BP, DB, NP = 3, 1, 11


def scenario(vendor: str, body: str):
    paging = "ept" if vendor == "vmx" else "npt"
    return parse_scenario(f"evdiff 1 vendor={vendor} {paging}=on\n{body}")


def outcomes(name: str, s) -> list:
    out = api.load(name).run(s)
    return list(out.outcomes) if isinstance(out, Allowed) else [out]


def trace(name: str, s, level: int) -> list:
    (out,) = outcomes(name, s)
    return [o for _, o in (out.l1 if level == 1 else out.l2)]


# -------------------------------------------------------------- language --


def test_insn_len_round_trips_in_both_forms():
    s = scenario("svm", "l1.vmentry inject=int(0x80) insn_len=3\n")
    assert s.events == (Event("l1.vmentry", (INT80, 3)),)
    assert format_scenario(s).splitlines()[-1] == "l1.vmentry inject=int(0x80) insn_len=3"
    assert parse_scenario(format_scenario(s)) == s
    assert binary.decode(binary.encode(s)) == s


def test_insn_len_defaults_to_byte_0_so_older_records_keep_their_meaning():
    """The new parameter sits in bytes that were padding: an old record (as
    written before it existed) decodes with insn_len=0, and the default
    event encodes as it always did."""
    rec = binary.encode_record(event("l1.vmentry", INT80))
    assert rec == binary.encode_record(Event("l1.vmentry", (INT80,)))  # built with the old arity
    spec = binary.SPECS[rec[0]]
    assert spec.params[1].name == "insn_len" and rec[1 + spec.params[0].type.width] == 0
    assert binary.decode(b"\0" + rec).events == (Event("l1.vmentry", (INT80, 0)),)
    assert len(rec) == binary.RECORD == 14


def test_observations_print_ret_and_len_only_where_they_say_something():
    assert str(Delivered(2, INT80, 2)) == "L2 handles INT 0x80 ret=+2"
    assert str(Delivered(2, exception(13, 0))) == "L2 handles #GP(ec=0x0)"  # +0: not printed
    assert str(Delivered(1, exception(8, 0), Undefined("SDM 6.15"))) == "L1 handles #DF(ec=0x0)"
    assert str(Delivered(2, INT80, -0x6FFF)) == "L2 handles INT 0x80 ret=-28671"
    exit_ = VmExit("EXCEPTION_NMI", exception(14, 2), INT80, 0x4000, length=2)
    assert str(exit_) == "EXIT EXCEPTION_NMI #PF(ec=0x2) addr=0x4000 len=2, IDT-vectoring: INT 0x80"
    assert shape(exit_) == "EXIT EXCEPTION_NMI #PF len=2, IDT-vectoring: INT 0x80"
    assert abstract(Delivered(2, INT80, 3)) == abstract(Delivered(2, INT80, 2)) == "L2 handles INT n ret=+N"
    assert abstract(Delivered(2, INT80, -5)) == "L2 handles INT n ret=-N"


# ------------------------------------------------------------- reference --


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_reference_fault_and_interrupt_resume_at_the_instruction(vendor):
    """SDM 6.5: a fault's return address is the faulting instruction; an
    interrupt between instructions returns to the next one (+0)."""
    s = scenario(vendor, "exception #GP\nirq 0x30\nsti\n")
    assert trace("reference", s, 1) == [Delivered(1, exception(13, 0)), Delivered(1, Ev(EvType.EXT_INTR, 0x30))]


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_reference_fault_during_int_n_delivery_returns_to_the_int(vendor):
    """A #NP met while delivering INT n is a fault of the INT n: +0."""
    s = scenario(vendor, "l1.idt 0x80\nint 0x80\n")
    (d,) = trace("reference", s, 1)
    assert d.event.vector == NP and d.ret == 0


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
@pytest.mark.parametrize("raise_db", ["exception #DB", "l0.emulate #DB"])
def test_reference_fault_during_a_db_delivery_returns_where_the_db_would(vendor, raise_db):
    """A #DB an instruction raises is a fault or a trap (SDM Table 6-1,
    17.3.1), so its return address is undefined, and so is that of a #PF
    met delivering it: before the instruction for a fault, after it for a
    trap (SDM 6.5).  The reference pushed +0, and the SVM ports of 5.11 and
    the RFC, which push +1, diverged."""
    s = scenario(vendor, f"delivery_fault #PF\n{raise_db}\n")
    (d,) = trace("reference", s, 1)
    assert d.event.vector == 14 and isinstance(d.ret, Undefined)
    assert all(agreement.agrees(p, s) for p in PORTS)


def test_reference_double_fault_return_address_is_undefined():
    """SDM 6.15 (Interrupt 8): the saved CS:EIP of #DF is undefined, so any
    port's value matches."""
    s = scenario("vmx", "l1.idt #GP\nexception #GP\n")
    (d,) = trace("reference", s, 1)
    assert isinstance(d.ret, Undefined)
    assert all(agreement.agrees(p, s) for p in PORTS)


@pytest.mark.parametrize("inject,insn_len,ret", [("int(0x80)", 3, 3), ("int(0x80)", 15, 15), ("#GP(0x0)", 5, 0),
                                                 ("nmi", 2, 0), ("intr(0x30)", 2, 0), ("#BP", 1, 0)])
def test_reference_vmx_injection_pushes_rip_plus_entry_length_for_types_4_to_6(inject, insn_len, ret):
    """SDM 26.5.1.1: types 4, 5, 6 push RIP + the VM-entry instruction
    length, the others RIP (`inject=#BP` is type 3 on VMX)."""
    s = scenario("vmx", f"l1.vmentry inject={inject} insn_len={insn_len}\n")
    (d,) = trace("reference", s, 2)
    assert d.ret == ret


def test_reference_vmx_entry_checks_the_instruction_length():
    """SDM 26.2.1.3: 16 and more fail the entry (VMfailValid); 0 only with
    IA32_VMX_MISC[30], a processor capability: both outcomes allowed."""
    long_ = scenario("vmx", "l1.vmentry inject=int(0x80) insn_len=16\n")
    assert trace("reference", long_, 1) == [EntryFailed("VMfailValid(7)")]
    zero = outcomes("reference", scenario("vmx", "l1.vmentry inject=int(0x80)\n"))
    assert sorted(([o for _, o in out.l1 + out.l2] for out in zero), key=str) == sorted(
        [[EntryFailed("VMfailValid(7)")], [Delivered(2, INT80, 0)]], key=str)
    assert trace("reference", scenario("vmx", "l1.vmentry inject=#GP(0x0) insn_len=200\n"), 1) == []


@pytest.mark.parametrize("inject,insn_len,ret", [("int(0x80)", 2, 2), ("int(0x80)", 0, 0), ("int(0x80)", 16, 16),
                                                 ("#BP", 1, 1), ("#GP(0x0)", 3, 0), ("nmi", 2, 0)])
def test_reference_svm_injection_pushes_next_rip_for_intn_int3_into(inject, insn_len, ret):
    """APM 15.20 and the hardware-validated svm_nested_soft_inject_test.c:
    an INTn, or type 3 with vector 3 / 4, pushes next_rip (= RIP +
    insn_len); any value is accepted (no VMEXIT_INVALID for it)."""
    s = scenario("svm", f"l1.vmentry inject={inject} insn_len={insn_len}\n")
    (d,) = trace("reference", s, 2)
    assert d.ret == ret


@pytest.mark.parametrize("vendor,length", [("vmx", 1), ("svm", 1)])
def test_reference_intercepted_int3_reports_its_length(vendor, length):
    """SDM 27.2.4 (VM-exit instruction length of INT3); APM 15.7.1 (nRIP for
    the INT3 intercept)."""
    s = scenario(vendor, "l1.intercept exceptions=#BP\nl1.vmentry\nint3\n")
    (exit_,) = trace("reference", s, 1)
    assert exit_.length == length and exit_.ret == 0


@pytest.mark.parametrize("body,vmx_length", [("l1.vmentry\nint 0x80\n", 2),
                                             ("l1.vmentry inject=int(0x80) insn_len=3\n", 3)])
def test_reference_exit_during_soft_event_delivery_reports_the_length_on_vmx_only(body, vmx_length):
    """SDM 27.2.4: a fault during the delivery of a software interrupt
    reports its instruction's length, for an injected one the VM-entry
    instruction length; APM 15.7.1: nRIP is zero for an exception
    intercept during delivery."""
    setup = "l1.intercept exceptions=#NP\nl2.idt 0x80\n"
    (vmx,) = trace("reference", scenario("vmx", setup + body), 1)
    (svm,) = trace("reference", scenario("svm", setup + body), 1)
    assert vmx.vectoring == svm.vectoring == INT80
    assert vmx.length == vmx_length and svm.length is None


def test_reference_triple_fault_exit_saves_an_undefined_rip():
    """SDM 27.3.3: the RIP saved is the one the #DF would have pushed,
    undefined (SDM 6.15)."""
    (exit_,) = trace("reference", scenario("vmx", "l2.stack #PF\nl1.vmentry inject=#DF(0x0)\n"), 1)
    assert exit_.reason == "TRIPLE_FAULT" and isinstance(exit_.ret, Undefined)


# ----------------------------------------------------------------- ports --


@pytest.mark.parametrize("port", PORTS)
def test_vmx_soft_interrupt_reinjection_keeps_the_instruction_length(port):
    """L1 injects INT 0x80 with a 3-byte length; an EPT violation L0 fixes
    interrupts its delivery.  The CPU reports the VM-entry instruction length
    as the exit's (SDM 27.2.4), __vmx_complete_interrupts keeps it
    (event_exit_inst_len) and vmx_inject_irq re-injects with it: the handler
    returns 3 bytes on, in every tree."""
    s = scenario("vmx", "l1.vmentry\nl0.mmu_fixup delivery\nl2.vmcall\nl1.vmentry inject=int(0x80) insn_len=3\n")
    assert trace(port, s, 2) == [Delivered(2, INT80, 3)]
    assert agreement.agrees(port, s)


@pytest.mark.parametrize("port", PORTS)
def test_vmx_exit_during_l2_int_n_reports_its_length_to_l1(port):
    s = scenario("vmx", "l1.intercept exceptions=#NP\nl2.idt 0x80\nl1.vmentry\nint 0x80\n")
    (exit_,) = trace(port, s, 1)
    assert exit_.length == 2 and exit_.vectoring == INT80
    assert agreement.agrees(port, s)


def test_svm_511_drops_an_injected_int3_where_61_reinjects_it_with_next_rip():
    """L1 injects INT3's #BP with next_rip = RIP + 1; an NPF L0 fixes
    interrupts it.  5.11 drops the soft exception from EXITINTINFO for the
    guest to execute INT3 again -- there is none at L2's RIP: the #BP is
    lost.  6.1 re-queues it and svm_complete_soft_interrupt gives the VMCB
    back the next_rip recorded at the injection: L2's handler returns one
    byte on (injected-int3-dropped-svm).  The root cause is filed under
    5.11's first deviation at that entry: it never handed L1's next_rip to
    the CPU (nested_prepare_vmcb_control)."""
    s = scenario("svm", "l1.vmentry\nl0.mmu_fixup delivery\nl2.vmcall\nl1.vmentry inject=#BP insn_len=1\n")
    assert trace("reference", s, 2) == [Delivered(2, exception(BP), 1)]
    for port in SVM_61:
        assert trace(port, s, 2) == [Delivered(2, exception(BP), 1)], port
    for port in SVM_511:
        assert trace(port, s, 2) == [], port
    (cause,) = compare(s, ["reference", *PORTS]).causes
    assert cause.impls == tuple(sorted(SVM_511)) and "next_rip is not copied" in cause.signature
    (out,) = outcomes("prepatch", s)
    assert any("soft exception 3 in EXITINTINFO is dropped" in text for _, text in out.notes)


def test_svm_reexecuting_l2s_own_int3_returns_where_reinjecting_does():
    """Where the INT3 is L2's own instruction, executing it again (5.11)
    and re-injecting it with next_rip (6.1) push the same return address:
    ret= tells the two apart only where no instruction backs the event."""
    s = scenario("svm", "l1.vmentry\nl0.mmu_fixup delivery\nint3\n")
    for port in PORTS:
        assert trace(port, s, 2) == [Delivered(2, exception(BP), 1)], port


def test_svm_511_pushes_a_stale_next_rip_for_an_injected_int_n():
    """5.11 does not copy vmcb12's next_rip into the VMCB that runs L2: the
    injected INTn returns to the next_rip of L1's VMRUN intercept, in L1's
    code (next-rip-not-synced-svm, fixed by 00f08d99dd7b)."""
    s = scenario("svm", "l1.vmentry inject=int(0x80) insn_len=2\n")
    for port in SVM_61:
        assert trace(port, s, 2) == [Delivered(2, INT80, 2)], port
    for port in SVM_511:
        (d,) = trace(port, s, 2)
        assert d.ret < 0, port  # L1's code lies below L2's (impls.hw.cpu.RIP_BASE)


def test_svm_61_reinjects_l2s_int_n_with_the_decoded_next_rip():
    """An NPF during the delivery of L2's own INT n zeroes nRIP (APM
    15.7.1); 6.1's svm_update_soft_interrupt_rip decodes the INT n
    (__svm_skip_emulated_instruction, EMULTYPE_SKIP) and hands next_rip =
    RIP + 2 to the CPU, then puts RIP back."""
    s = scenario("svm", "l1.vmentry\nl0.mmu_fixup delivery\nint 0x80\n")
    from impls.upstream.driver import Driver
    from impls.upstream.vcpu import Vcpu
    d = Driver(s, Vcpu)
    d.run_events()
    assert [o for _, o in d.rec.l2] == [Delivered(2, INT80, 2)]
    assert d.vcpu.svm.soft_int_next_rip == d.vcpu.svm.soft_int_old_rip + 2


def test_svm_61_leaks_the_restored_next_rip_into_vmcb12():
    """next-rip-leaks-into-vmcb12-svm: L1 reads nRIP = RIP + 2 on a #PF
    intercept during its INTn's delivery; the CPU saved zero."""
    s = scenario("svm", "l1.intercept exceptions=#PF\nl2.stack #PF\nl1.vmentry inject=int(0x80) insn_len=2\n")
    for port in SVM_61:
        (exit_,) = trace(port, s, 1)
        assert exit_.length == 2 and exit_.vectoring == INT80, port
    (ref,) = trace("reference", s, 1)
    assert ref.length is None
