"""#BP and #OF are software exceptions: only INT3 and INTO raise them (SDM
6.3.1 Table 6-1), so `exception #BP` / `#OF` and a userspace-set one are
typed as such in the reference, the simulated CPU and what the CPU hands the
KVM ports: VMX type 6 on exits (SDM 27.2.2, 27.2.3) with the instruction's
length (SDM 27.2.4), EXT=0 in the error code of a fault during their
delivery (SDM 6.13), SVM type 3 (APM 15.7.2), and re-execution of the
INT3 / INTO when L0 resumes without re-injecting it (KVM 5.11 on SVM).
"""
from __future__ import annotations

import pytest

import agreement

from fuzz.oracle import compare
from fuzz.text import parse_scenario
from impls import api, arch
from impls.api import Delivered, VmExit
from impls.arch import Ev, EvType, Merge
from impls.arch import svm as asvm
from impls.arch import vmx as avmx
from impls.prepatch.driver import Driver as Driver511
from impls.prepatch.vcpu import Vcpu as Vcpu511
from impls.upstream.driver import Driver as Driver61
from impls.upstream.vcpu import Vcpu as Vcpu61

PORTS = ("prepatch", "postpatch", "postpatch-v2", "upstream")
BP, OF, NP = 3, 4, 11


def scenario(vendor: str, body: str, caps: str = ""):
    paging = "ept" if vendor == "vmx" else "npt"
    header = f"evdiff 1 vendor={vendor} {paging}=on" + (f" caps={caps}" if caps else "")
    return parse_scenario(f"{header}\n{body}")


def l1_trace(name: str, s) -> list:
    out = api.load(name).run(s)
    if isinstance(out, api.Allowed):
        (out,) = out.outcomes
    return [o for _, o in out.l1]


def l2_trace(name: str, s) -> list:
    out = api.load(name).run(s)
    if isinstance(out, api.Allowed):
        (out,) = out.outcomes
    return [o for _, o in out.l2]


# ------------------------------------------------------------------ arch --


@pytest.mark.parametrize("vector", [BP, OF])
def test_int3_and_into_raise_software_exceptions(vector):
    assert arch.raised_type(vector) is EvType.SOFT_EXCEPTION
    soft = Ev(EvType.SOFT_EXCEPTION, vector)
    assert avmx.encode(soft)[0] >> 8 & 7 == 6  # SDM 24.8.3 Table 24-13
    assert asvm.encode(soft)[0] >> 8 & 7 == 3  # APM 15.7.2
    assert arch.second_exception(soft, NP) is Merge.SERIAL  # benign (SDM Table 6-4)
    for vendor in ("vmx", "svm"):  # EXT=0 (SDM 6.13; AMD: only INTR / NMI set it, arch.ext_bit)
        assert arch.gate_fault(arch.DescriptorState(idt_entries=0), soft, vendor) == (13, vector * 8 + 2)


@pytest.mark.parametrize("vector", [0, 1, 5, 6, 13, 14])
def test_other_vectors_stay_hardware_exceptions(vector):
    assert arch.raised_type(vector) is EvType.HW_EXCEPTION


@pytest.mark.parametrize("vector", [BP, OF])
def test_svm_type_3_vector_3_or_4_reads_as_int3_or_into(vector):
    """APM 15.7.2 (EXITINTINFO) and 15.20 (EVENTINJ "behaves like a trap
    raised by INT3 and INTO"): one encoding, one meaning."""
    info = asvm.EVTINJ_VALID | asvm.TYPE_EXEPT << 8 | vector
    assert asvm.decode(info) == Ev(EvType.SOFT_EXCEPTION, vector)
    assert asvm.decode(*asvm.encode(Ev(EvType.SOFT_EXCEPTION, vector))) == Ev(EvType.SOFT_EXCEPTION, vector)
    assert asvm.decode(asvm.EVTINJ_VALID | asvm.TYPE_EXEPT << 8 | 6) == Ev(EvType.HW_EXCEPTION, 6)


# ------------------------------------------------------------- reference --


@pytest.mark.parametrize("vector,name", [(BP, "#BP"), (OF, "#OF")])
def test_reference_intercepted_int3_exits_with_type_6(vector, name):
    s = scenario("vmx", f"l1.intercept exceptions={name}\nl1.vmentry\nexception {name}\n")
    (exit_,) = l1_trace("reference", s)
    # SDM 27.2.4: the VM-exit instruction length of INT3 / INTO, 1.
    assert exit_ == VmExit("EXCEPTION_NMI", Ev(EvType.SOFT_EXCEPTION, vector), length=1)
    assert avmx.encode(exit_.info)[0] >> 8 & 7 == 6


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
@pytest.mark.parametrize("vector,name", [(BP, "#BP"), (OF, "#OF")])
def test_reference_fault_during_int3_delivery_has_ext_clear(vendor, vector, name):
    """SDM 6.13, SDM2 INT n: EXT=0 while delivering INT3 / INTO."""
    s = scenario(vendor, f"l1.idt {vector} gate=not_present\nexception {name}\n")
    assert l1_trace("reference", s) == [Delivered(1, Ev(EvType.HW_EXCEPTION, NP, vector * 8 + 2))]


def test_reference_vmx_injected_bp_is_a_hardware_exception():
    """L1 writes type 3 for `inject=#BP`: EXT=1 (SDM 26.5.1.2); SVM's type 3
    with vector 3 is INT3's trap (APM 15.20): EXT=0."""
    body = "l2.idt 3 gate=not_present\nl1.vmentry inject=#BP\n"
    assert l2_trace("reference", scenario("vmx", body)) == [Delivered(2, Ev(EvType.HW_EXCEPTION, NP, 0x1B))]
    assert l2_trace("reference", scenario("svm", body)) == [Delivered(2, Ev(EvType.HW_EXCEPTION, NP, 0x1A))]


def test_reference_userspace_bp_is_int3s():
    """KVM_SET_VCPU_EVENTS names no type: a pending #BP is INT3's."""
    s = scenario("vmx", "l1.intercept exceptions=#BP\nl1.vmentry\nuser.set_exception #BP\n", "exception_payload")
    assert l1_trace("reference", s) == [VmExit("EXCEPTION_NMI", Ev(EvType.SOFT_EXCEPTION, BP), length=1)]


# ----------------------------------------------------------------- ports --


@pytest.mark.parametrize("port", PORTS)
@pytest.mark.parametrize("vector,name", [(BP, "#BP"), (OF, "#OF")])
def test_ports_see_the_intercepted_int3_exit_as_type_6(port, vector, name):
    """The simulated CPU exits with type 6; KVM reflects it to L1 as is."""
    s = scenario("vmx", f"l1.intercept exceptions={name}\nl1.vmentry\nexception {name}\n")
    assert l1_trace(port, s) == [VmExit("EXCEPTION_NMI", Ev(EvType.SOFT_EXCEPTION, vector), length=1)]
    assert agreement.agrees(port, s)


@pytest.mark.parametrize("port", PORTS)
@pytest.mark.parametrize("vendor", ["vmx", "svm"])
@pytest.mark.parametrize("name", ["#BP", "#OF"])
@pytest.mark.parametrize("level", ["", "l1.vmentry\n"])
def test_l0_fixup_during_int3_delivery_is_invisible(port, vendor, name, level):
    """An L0 fix-up (EPT violation / NPF) during INT3's delivery: VMX KVM
    re-injects type 6, 5.11 SVM re-executes the INT3 (svm_complete_interrupts
    drops it, the CPU's RIP is still on it), 6.1 SVM re-injects it.  Each
    way the guest sees its #BP once, as the reference says."""
    s = scenario(vendor, f"{level}l0.mmu_fixup delivery\nexception {name}\n")
    assert agreement.agrees(port, s)
    trace = l2_trace(port, s) if level else l1_trace(port, s)
    assert [o.event.vector for o in trace if isinstance(o, Delivered)] == [arch.MNEMONICS[name]]


@pytest.mark.parametrize("port", PORTS)
@pytest.mark.parametrize("stack", ["#PF", "#SS"])
def test_guest_fault_during_int3_delivery_does_not_re_execute_it(port, stack):
    """A guest-visible fault during INT3's delivery reaches its handler: the
    INT3 is not executed again (the handler's IRET is not modelled)."""
    for vendor in ("vmx", "svm"):
        s = parse_scenario(f"evdiff 1 vendor={vendor} {'ept' if vendor == 'vmx' else 'npt'}=off\n"
                           f"l1.stack {stack}\nexception #BP\n")
        assert agreement.agrees(port, s), (vendor, stack)


@pytest.mark.parametrize("port,agrees", [("prepatch", False), ("postpatch", False), ("upstream", True)])
def test_svm_l1_injected_bp_is_lost_by_511_after_an_l0_fixup(port, agrees):
    """EVENTINJ type 3 vector 3 from L1 (INT3's trap, APM 15.20) meets an L0
    fix-up in L2: 5.11's svm_complete_interrupts drops it to let the guest
    re-execute an INT3 that L2 never executed (the RFC keeps that code), so
    L2 never sees it; 6.1 re-queues it (Sean Christopherson, "KVM: SVM:
    Re-inject INT3/INTO instead of retrying the instruction", 2022)."""
    s = scenario("svm", "l1.vmentry\nl0.mmu_fixup delivery\nl2.vmcall\nl1.vmentry inject=#BP\n")
    assert agreement.agrees(port, s) is agrees
    if not agrees:
        (d,) = [d for d in compare(s, ["reference", port]).divergences if d.field == "l2"]
        assert d.signature.startswith(f"svm l2 [{port}: nothing]"), d.signature


# ------------------------------------------------ VMX instruction length --


def _run(driver_cls, vcpu_cls, s):
    d = driver_cls(s, vcpu_cls)
    d.run_events()
    return d


@pytest.mark.parametrize("driver_cls,vcpu_cls", [(Driver511, Vcpu511), (Driver61, Vcpu61)])
def test_intercepted_int3_exit_reports_its_length_to_l1(driver_cls, vcpu_cls):
    """SDM 27.2.4: the exit on INT3 reports its length, 1; prepare_vmcs12
    copies vmcs02's field into vmcs12."""
    d = _run(driver_cls, vcpu_cls, scenario("vmx", "l1.intercept exceptions=#BP\nl1.vmentry\nexception #BP\n"))
    assert d.vcpu.vmx.nested.vmcs12.vm_exit_instruction_len == arch.INSTRUCTION_LENGTH[EvType.SOFT_EXCEPTION] == 1


@pytest.mark.parametrize("driver_cls,vcpu_cls", [(Driver511, Vcpu511), (Driver61, Vcpu61)])
def test_reinjected_int3_keeps_its_length(driver_cls, vcpu_cls):
    """__vmx_complete_interrupts keeps the VM-exit instruction length of a
    type-6 IDT-vectoring event and vmx_queue_exception / vmx_inject_exception
    hands it back as the VM-entry instruction length."""
    d = _run(driver_cls, vcpu_cls, scenario("vmx", "l0.mmu_fixup delivery\nexception #BP\n"))
    assert d.vcpu.arch.event_exit_inst_len == 1
    assert d.vcpu.vmx.vmcs01.vmcs.entry_instruction_len == 1


# ------------------------------------------------------------ signatures --


def test_signatures_tell_a_software_exception_from_a_hardware_one():
    from fuzz.oracle import abstract

    assert abstract(VmExit("EXCEPTION_NMI", Ev(EvType.SOFT_EXCEPTION, BP))) == \
        "EXIT EXCEPTION_NMI soft exception, IDT-vectoring: none"
    assert abstract(VmExit("EXCEPTION_NMI", Ev(EvType.HW_EXCEPTION, NP, 0), Ev(EvType.HW_EXCEPTION, BP))) == \
        "EXIT EXCEPTION_NMI exception, IDT-vectoring: exception"


def test_vmx_reinjection_retypes_l1s_hardware_bp():
    """L1 injects #BP as type 3; an L0 fix-up interrupts its delivery; KVM
    re-queues it by vector and vmx_queue_exception / vmx_inject_exception
    re-inject every vector 3 as type 6 (kvm_exception_is_soft), so the #NP
    that follows has EXT=0 and L1 reads IDT-vectoring type 6.  Every port."""
    s = scenario("vmx", "l1.intercept exceptions=#NP\nl1.vmentry\nl0.mmu_fixup delivery\nl2.idt 3 gate=not_present\n"
                        "l2.vmcall\nl1.vmentry inject=#BP\n")
    (d,) = compare(s, ["reference", *PORTS]).divergences
    assert d.impls == tuple(sorted(PORTS))
    assert d.signature.endswith("expected: EXIT EXCEPTION_NMI exception, IDT-vectoring: exception"), d.signature
    assert "IDT-vectoring: soft exception" in d.signature


@pytest.mark.parametrize("port", PORTS)
@pytest.mark.parametrize("vendor", ["vmx", "svm"])
@pytest.mark.parametrize("body", ["user.set_exception #BP\nuser.migrate\n",
                                  "user.set_exception #OF\nl0.mmu_fixup delivery\n"])
def test_userspace_bp_comes_with_rip_on_its_int3(port, vendor, body):
    """KVM_GET_VCPU_EVENTS leaves a soft exception out, and 5.11's
    svm_complete_interrupts drops one after an exit during its delivery:
    both count on the guest raising it again from the INT3 / INTO at RIP,
    which is where the VMM put RIP (impls.hw.environment, "The VMM").  An
    #OF userspace injected on VMX is the exception: vmx_queue_exception /
    vmx_inject_exception inject it as type 6 with the instruction length of
    the vCPU's last exit (event_exit_inst_len; none yet here: 0), so its
    handler returns to the INTO (ret=+0), where the reference, with RIP on
    the INTO, returns past it.  (The April repost drops what userspace set,
    v2-set-events-drops-exception-vmx, and the INTO raises #OF again.)"""
    s = scenario(vendor, body)
    if vendor == "vmx" and "#OF" in body and port != "postpatch-v2":
        assert l1_trace(port, s) == [Delivered(1, Ev(EvType.HW_EXCEPTION, OF), 0)]
        assert l1_trace("reference", s) == [Delivered(1, Ev(EvType.HW_EXCEPTION, OF), 1)]
    else:
        assert agreement.agrees(port, s)


def test_userspace_replacing_its_bp_moves_rip_off_the_int3():
    """A #DE set after the #BP replaces it: RIP is on the #DE's instruction,
    so a port that drops the #DE (the April repost, NOTES.md V1) must not
    raise the #BP again."""
    s = scenario("vmx", "user.set_exception #BP\nuser.set_exception #DE\n")
    assert [o.event.vector for o in l1_trace("reference", s)] == [0]
    assert [o.event.vector for o in l1_trace("postpatch-v2", s)] == []
