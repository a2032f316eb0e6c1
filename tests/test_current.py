"""The current-release port (KVM as of Linux 6.18) on the simulated CPU.

* every function the port defines names its 6.18 origin, the vCPU resolves
  each function 6.18 changed to the 6.18 version, and the 6.1 functions
  6.18 removed are unreachable;
* what 6.18 fixes against the reference, pinned scenario by scenario with
  the C function that makes the difference (the 6.1 port, `upstream`, still
  diverges on each);
* what 6.18 still gets wrong, pinned with the C function responsible;
* the 6.18 mechanisms (SMRAM's interrupt shadow, the pending-NMI count in
  KVM_GET/SET_VCPU_EVENTS, has_events, vNMI off) do what 6.18 does.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import agreement

from fuzz.oracle import compare
from fuzz.text import parse_scenario, read_scenario
from impls import api

SEEDS = Path(__file__).resolve().parent.parent / "corpus" / "seeds"
REGRESSIONS = Path(__file__).resolve().parent.parent / "corpus" / "regressions"


def run(name: str, s):
    return api.load(name).run(s)


def sc(vendor: str, body: str, npt: str = "on", caps: str = ""):
    paging = "ept" if vendor == "vmx" else "npt"
    return parse_scenario(f"evdiff 1 vendor={vendor} {paging}={npt}{' caps=' + caps if caps else ''}\n{body}")


def l1(out):
    return [(step, str(o)) for step, o in out.l1]


def fields(s, name: str) -> set[str]:
    """The fields where `name` differs from the reference."""
    return {d.field for d in compare(s, ["reference", name]).divergences}


def vcpu_before_running(s):
    """The 6.18 vCPU after the scenario's events, without the implicit
    final run (no KVM_RUN if the events need none)."""
    from impls.api import HANDLER
    from impls.current.vcpu import Vcpu
    from impls.upstream.driver import Driver

    d = Driver(s, Vcpu)
    for ev in d.events:
        getattr(d, HANDLER[ev.kind])(ev)
    return d.vcpu


def vcpu_after(s):
    """The 6.18 vCPU after running `s` (for looking at KVM's state)."""
    from impls.current.vcpu import Vcpu
    from impls.upstream.driver import Driver

    d = Driver(s, Vcpu)
    d.run_events()
    return d.vcpu


# ---------------------------------------------------------------- origins --

#: Port plumbing that is not a kernel function.
PLUMBING = {"_x86_call_ret0", "_nested_ops"}


def test_registered():
    assert "current" in api.names()
    impl = api.load("current")
    assert impl.name == "current" and "Linux 6.18" in impl.origin
    assert ("prepatch", "current") in api.PAIRS and ("upstream", "current") in api.PAIRS


def test_every_port_function_names_its_618_origin():
    from impls.current import smm, svm, svm_nested, vcpu, vmx, vmx_nested, x86

    missing, wrong_tree = [], []
    for mod in (x86, smm, vmx, vmx_nested, svm, svm_nested, vcpu):
        for name, obj in vars(mod).items():
            fns = []
            if inspect.isclass(obj) and obj.__module__ == mod.__name__:
                fns = [(f"{name}.{m}", f) for m, f in vars(obj).items()
                       if inspect.isfunction(f) and not m.startswith("__")]
            elif inspect.isfunction(obj) and obj.__module__ == mod.__name__ and name not in PLUMBING:
                fns = [(name, obj)]
            for qual, fn in fns:
                o = getattr(fn, "__origin__", None)
                if o is None:
                    missing.append(f"{mod.__name__}.{qual}")
                elif o.tree != "6.18":
                    wrong_tree.append(f"{mod.__name__}.{qual}: {o.tree}")
    assert not missing, f"port functions without @origin: {missing}"
    assert not wrong_tree, f"port functions not marked tree='6.18': {wrong_tree}"


#: Every kernel function whose 6.18 version differs from 6.1 in what the
#: event paths do (docs/kernel/current.md); the vCPU must resolve each to a
#: 6.18 port.
CHANGED_IN_618 = [
    "kvm_multiple_exception", "kvm_queue_exception", "kvm_queue_exception_e", "kvm_queue_exception_p",
    "kvm_queue_exception_e_p", "kvm_requeue_exception", "kvm_inject_exception", "process_nmi",
    "kvm_get_nr_pending_nmis", "kvm_check_nested_events", "kvm_check_and_inject_events", "kvm_vcpu_exit_request",
    "vcpu_enter_guest", "kvm_vcpu_running", "kvm_vcpu_ioctl_x86_get_vcpu_events",
    "kvm_vcpu_ioctl_x86_set_vcpu_events",
    "process_smi", "kvm_smm_changed", "enter_smm", "enter_smm_save_state_64", "rsm_load_state_64",
    "emulator_leave_smm", "em_rsm",
    "_vmx_complete_interrupts", "vmx_check_nested_events", "nested_vmx_vmexit", "nested_vmx_enter_non_root_mode",
    "nested_vmx_triple_fault", "vmx_has_nested_events",
    "svm_complete_interrupts", "svm_set_vintr", "svm_is_vnmi_pending", "svm_set_vnmi_pending",
    "recalc_intercepts", "sync_nested_vmcb_control", "nested_svm_triple_fault", "nested_svm_vmexit",
]


@pytest.mark.parametrize("fn", CHANGED_IN_618)
def test_vcpu_resolves_changed_functions_to_618(fn):
    from impls.current.vcpu import Vcpu

    assert getattr(Vcpu, fn).__origin__.tree == "6.18"


@pytest.mark.parametrize("fn, replacement", [
    ("kvm_requeue_exception_e", "kvm_requeue_exception"),
    ("emulator_exiting_smm", "emulator_leave_smm"),
    ("emulator_get_hflags", "is_smm"),
])
def test_functions_618_removed_are_unreachable(fn, replacement):
    v = vcpu_after(sc("vmx", ""))
    with pytest.raises(NotImplementedError, match=f"{fn} is not in Linux 6.18.*{replacement}"):
        getattr(v, fn)


def test_ops_tables_are_the_618_hooks():
    vmx = vcpu_after(sc("vmx", ""))
    svm = vcpu_after(sc("svm", ""))
    assert vmx.nested_ops.has_events.__origin__.function == "vmx_has_nested_events"
    assert svm.nested_ops.has_events is None  # svm_nested_ops has none
    assert not hasattr(vmx.nested_ops, "hv_timer_pending")
    assert svm.kvm_x86_ops.is_vnmi_pending.__origin__.tree == "6.18"
    assert not hasattr(vmx.kvm_x86_ops, "is_vnmi_pending")  # KVM_X86_OP_OPTIONAL_RET0


# ------------------------------------------------------------- what 6.18 fixes --

#: name -> (scenario, the 6.18 C functions that make current agree where the
#: 6.1 port does not).  The cases in `IN_V61` are v6.1 code the 6.1 port
#: does not follow yet (issue 13, SOURCES.md section 3): once it does, the
#: 6.1 port agrees there too.
FIXED = {
    # SMRAM holds the interrupt shadow (6.2): the interrupt the STI shadow
    # held waits for the #GP, as in the reference.
    "smi-shadow-vmx": (sc("vmx", "cli\nsti\nsmi\nirq 0x20\nexception #GP\n"),
                       "enter_smm_save_state_64, rsm_load_state_64"),
    "smi-shadow-svm": (sc("svm", "cli\nsti\nsmi\nirq 0x20\nexception #GP\n"),
                       "enter_smm_save_state_64, rsm_load_state_64"),
    # ... and VMLAUNCH under the MOV-SS shadow RSM restored fails with
    # VMfailValid(26) (SDM 30.3, VMLAUNCH).
    "smi-movss-vmlaunch": (sc("vmx", "mov_ss\nsmi\nl1.vmentry\n"), "enter_smm_save_state_64, rsm_load_state_64"),
    # Real mode: no error code (6c41468c7c12).
    "rm-error-code": (sc("vmx", "l1.mode real\nl0.emulate #GP ec=0x8\n"), "kvm_inject_exception"),
    # (A pending exception then a switch to real mode no longer shows it: the
    # mode change is an instruction, after which nothing is pending.)
    # A triple fault in L2 that L1 does not intercept shuts the VM down.
    "triple-fault-unintercepted-svm": (sc("svm", "l1.intercept shutdown=0\nl2.stack #PF\nl1.vmentry inject=#DF(0x0)\n",
                                          npt="off"),
                                       "nested_svm_triple_fault, kvm_check_nested_events, vcpu_enter_guest"),
    # Nested events are not checked before every entry any more: L2 gets
    # the NMI after the INT n L1 injected (issue 13's example).
    "running-vmx": (sc("vmx", "l1.intercept intr=1\nl1.vmentry inject=int(0x80)\nirq 0x21\nnmi\n"),
                    "kvm_vcpu_running"),
    # ... and the SMI exit outranks the interrupt exit after VMRUN.
    "running-svm": (sc("svm", "l1.intercept intr=1 smi=1\nmov_ss\nirq 0x20\nl1.vmentry\nsmi\n"), "kvm_vcpu_running"),
    # After the exit to L1, the NMI still pending (its window was asked of
    # vmcs02) is evaluated for L1.
    "nmi-after-nested-exit-vmx": (sc("vmx", "l1.vmentry\nuser.nmi\nuser.set_nmi injected=1\nl2.vmcall\n"),
                                  "nested_vmx_vmexit (__nested_vmx_vmexit)"),
    # RFLAGS.TF of L1 comes back from vmcb01 at #VMEXIT: the NMI
    # single-step KVM set before VMRUN does not outlive it.
    "nmi-singlestep-across-vmrun-svm": (sc("svm", "mov_ss\nnmi\nl1.vmentry inject=nmi\nl2.vmcall\n"),
                                        "nested_svm_vmexit (kvm_set_rflags)"),
}


IN_V61 = {"triple-fault-unintercepted-svm", "running-vmx", "running-svm"}


@pytest.mark.parametrize("name", sorted(FIXED))
def test_618_fixes(name):
    s, why = FIXED[name]
    assert agreement.agrees("current", s), why
    if name in IN_V61:
        return
    assert not agreement.agrees("upstream", s), f"the 6.1 port agrees already: {name} pins nothing"
    report = compare(s, ["reference", "upstream", "current"])
    assert {d.verdicts["upstream->current"] for d in report.divergences} == {"fixed"}


def test_smi_shadow_round_trip():
    """enter_smm_save_state_64 saves the STI shadow, enter_smm clears it for
    the handler, rsm_load_state_64 hands it to the emulator's writeback: the
    interrupt comes after the #GP."""
    out = run("current", FIXED["smi-shadow-vmx"][0])
    assert l1(out) == [(4, "SMI handled in SMM (L1 running)"), (4, "L1 handles #GP(ec=0x0)")]
    assert out.final.irq_pending == (0x20,)


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_smram_holds_the_shadow(vendor):
    """The state-save area written at the SMI holds the STI shadow
    (KVM_X86_SHADOW_INT_STI; SVM reports both bits)."""
    from impls.prepatch.state import KVM_X86_SHADOW_INT_STI

    v = vcpu_after(sc(vendor, "cli\nsti\nsmi\nexception #GP\n"))
    assert v.cpu.smram["int_shadow"] & KVM_X86_SHADOW_INT_STI


def test_triple_fault_unintercepted_shuts_down():
    """nested_svm_triple_fault leaves KVM_REQ_TRIPLE_FAULT set without L1's
    SHUTDOWN intercept: KVM_EXIT_SHUTDOWN, nothing for L1."""
    out = run("current", FIXED["triple-fault-unintercepted-svm"][0])
    assert out.shutdown == 2 and out.l1 == ()


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_triple_fault_intercepted_exits_to_l1(vendor):
    body = ("l1.intercept shutdown=1\n" if vendor == "svm" else "") + "l2.stack #PF\nl1.vmentry inject=#DF(0x0)\n"
    s = sc(vendor, body, npt="off")
    out = run("current", s)
    assert out.shutdown is None and [str(o).split(",")[0] for _, o in out.l1] == [
        "EXIT SHUTDOWN" if vendor == "svm" else "EXIT TRIPLE_FAULT"]
    assert not fields(s, "current") & {"l1", "l2", "shutdown", "alarms", "livelock"}


# ------------------------------------------ KVM_GET/SET_VCPU_EVENTS and NMIs --


def test_get_vcpu_events_counts_pending_nmis():
    """kvm_get_nr_pending_nmis: two NMIs pending are reported as 2 (6.1:
    a flag)."""
    from impls.api import HANDLER
    from impls.upstream.driver import Driver
    from impls.upstream.vcpu import Vcpu as Vcpu61

    s = sc("vmx", "nmi\nnmi\n")
    assert vcpu_before_running(s).kvm_vcpu_ioctl_x86_get_vcpu_events().nmi_pending == 2
    d = Driver(s, Vcpu61)
    for ev in d.events:
        getattr(d, HANDLER[ev.kind])(ev)
    assert d.vcpu.kvm_vcpu_ioctl_x86_get_vcpu_events().nmi_pending == 1


def test_migration_keeps_both_nmis():
    """KVM_SET_VCPU_EVENTS puts the count into nmi_queued with KVM_REQ_NMI:
    after migration both NMIs are delivered (the second after IRET); 6.1
    keeps one.  The manuals allow both (how many NMIs are held: not
    found), so both ports agree with the reference."""
    s = sc("vmx", "nmi\nnmi\nuser.migrate\niret\n")
    assert [o for _, o in l1(run("current", s))] == ["L1 handles NMI", "L1 handles NMI"]
    assert [o for _, o in l1(run("upstream", s))] == ["L1 handles NMI"]
    assert agreement.agrees("current", s) and agreement.agrees("upstream", s)


def test_vnmi_is_off():
    """With vNMI off the vNMI hooks hand nothing to the CPU (process_nmi
    keeps the NMIs in nmi_pending)."""
    v = vcpu_after(sc("svm", "nmi\n"))
    assert not v.is_vnmi_enabled() and not v.svm_is_vnmi_pending() and not v.svm_set_vnmi_pending()


# ---------------------------------------------------- what 6.18 still gets wrong --

#: regression case -> (fields where current differs from the reference, the
#: C function responsible in 6.18).
STILL_WRONG = {
    "b-triple-fault-l2-vmx": ({"final.cr2"}, "kvm_multiple_exception: the #PF payload on top of #DF never "
                                             "reaches CR2 (a triple fault is requested instead)"),
    "df-then-benign-vmx": ({"l1", "shutdown", "final.interrupts_enabled"},
                           "kvm_multiple_exception: any exception on an injected #DF is a triple fault"),
    "df-then-benign-svm": ({"l1", "shutdown", "final.interrupts_enabled"}, "kvm_multiple_exception"),
    "init-drops-pending-exception-vmx": ({"l2"}, "vmx_check_nested_events: INIT before the pending exception, "
                                                 "which __nested_vmx_vmexit drops"),
    "nmi-known-unmasked-vmx": ({"final.nmi_blocked"}, "vmx_get_nmi_mask: nmi_known_unmasked"),
    "nmi-mask-lost-on-migration-vmx": ({"l2", "final.nmi_pending"}, "vmx_get_nmi_mask: nmi_known_unmasked"),
    "nmi-waits-for-irq-window-vmx": ({"l1", "final.nmi_blocked", "final.nmi_pending"},
                                     "vmx_enable_nmi_window: under STI blocking it opens the interrupt window"),
}


@pytest.mark.parametrize("case", sorted(STILL_WRONG))
def test_618_still_wrong(case):
    expected, why = STILL_WRONG[case]
    s = read_scenario(REGRESSIONS / f"{case}.txt")
    assert fields(s, "current") == expected, why


def test_smi_exposes_the_nmi_window_under_sti():
    """New path to vmx_enable_nmi_window's wait: RSM now restores the STI
    shadow, so the NMI that follows the SMI meets STI blocking, asks for
    the interrupt window, and CLI keeps it shut (6.1 lost the shadow and
    delivered the NMI).  The #PF's interrupt gate clears IF, so that STI
    opens a shadow.  6.1 kept the shadow in vmcs01 under the SMM handler's
    IF=0, which fails the entry (SDM 26.3.1.5; fixed by fb28875fd7da)."""
    s = sc("vmx", "exception #PF\nsti\nnmi\nsmi\ncli\n")
    assert "l1" in fields(s, "current")
    assert l1(run("current", s))[1:] == [(4, "SMI handled in SMM (L1 running)")]
    assert run("upstream", s).alarms == ("KVM_EXIT_FAIL_ENTRY(0) 0x80000021",)


def test_in_flight_nmi_dropped_for_a_pending_exception():
    """kvm_check_and_inject_events does not re-inject an NMI over a pending
    exception (a #MC met while delivering the NMI): the NMI is gone, so NMI
    blocking never starts (SDM Table 6-5: handled serially)."""
    s = read_scenario(SEEDS / "df-benign-then-benign.txt")
    assert fields(s, "current") == {"final.nmi_blocked"}
    assert not run("current", s).final.nmi_blocked


# ------------------------------------------------------- the 6.18 mechanisms --


def test_nested_vmx_enter_non_root_mode_evaluates_a_pending_interrupt():
    """nested_vmx_enter_non_root_mode makes KVM_REQ_EVENT when the LAPIC has
    an interrupt (kvm_apic_has_interrupt), not only for vmcs01's windows
    and INIT/SIPI."""
    from impls.current.state import KVM_REQ_EVENT
    from impls.upstream.vcpu import Vcpu as Vcpu61

    v = vcpu_before_running(sc("vmx", "irq 0x20\n"))
    v.requests = 0
    v.nested_vmx_enter_non_root_mode(True)
    assert v.requests & KVM_REQ_EVENT
    v.requests = 0
    Vcpu61.nested_vmx_enter_non_root_mode(v, True)
    assert not v.requests & KVM_REQ_EVENT


def test_nested_vmx_vmexit_evaluates_pending_events():
    """__nested_vmx_vmexit makes KVM_REQ_EVENT after the exit if an
    interrupt or NMI is pending, and only then."""
    from impls.current.state import KVM_REQ_EVENT
    from impls.hw import cpu as hw

    for pending, made in ((False, False), (True, True)):
        v = vcpu_after(sc("vmx", "l1.vmentry\n"))
        assert v.is_guest_mode()
        v.arch.nmi_pending = int(pending)
        v.requests = 0
        v.nested_vmx_vmexit(hw.EXIT_REASON_VMCALL, 0, 0)
        assert bool(v.requests & KVM_REQ_EVENT) is made


@pytest.mark.parametrize("l1_if", [True, False])
def test_recalc_intercepts_keeps_vintr_while_l1_if_is_set(l1_if):
    """recalc_intercepts drops L0's VINTR intercept for L2 (V_INTR_MASKING)
    only while L1's saved RFLAGS.IF is 0, and svm_set_vintr then fakes no
    V_IRQ (6.1: always dropped, V_IRQ always set)."""
    from impls.hw import cpu as hw

    v = vcpu_after(sc("svm", "l1.intercept intr=1\nl1.vmentry\n"))
    assert v.is_guest_mode() and v.svm.nested.ctl.int_ctl & hw.V_INTR_MASKING_MASK
    v.svm.nested.hsave_rflags_if = l1_if
    v.svm.vmcb.int_ctl &= ~hw.V_IRQ_MASK
    v.svm_set_vintr()
    assert (hw.INTERCEPT_VINTR in v.svm.vmcb.intercepts) is l1_if
    assert bool(v.svm.vmcb.int_ctl & hw.V_IRQ_MASK) is l1_if


def test_nested_sync_control_keeps_l1_v_irq_while_l0_wants_a_window():
    """nested_sync_control_from_vmcb02: V_IRQ is not copied back to vmcb12
    while L0 (not L1) intercepts VINTR, V_INTR_MASKING or not."""
    from impls.hw import cpu as hw

    v = vcpu_after(sc("svm", "l1.intercept intr=1\nl1.vmentry\n"))
    v.svm.nested.hsave_rflags_if = True
    v.svm.nested.ctl.int_ctl &= ~hw.V_IRQ_MASK
    v.svm_set_vintr()
    v.sync_nested_vmcb_control()
    assert not v.svm.nested.ctl.int_ctl & hw.V_IRQ_MASK


def test_process_nmi_makes_no_event_without_nmis():
    from impls.current.state import KVM_REQ_EVENT

    v = vcpu_before_running(sc("vmx", ""))
    v.requests = 0
    v.process_nmi()
    assert not v.requests & KVM_REQ_EVENT
    v.arch.nmi_queued = 1
    v.process_nmi()
    assert v.requests & KVM_REQ_EVENT and v.arch.nmi_pending == 1


def test_kvm_requeue_exception_overwrites_and_warns_on_a_pending_one():
    """kvm_requeue_exception no longer merges: the slot becomes the
    injected exception with its error code, and a pending exception is a
    WARN."""
    v = vcpu_before_running(sc("vmx", ""))
    v.kvm_queue_exception_e(13, 0x10)
    v.kvm_requeue_exception(14, True, 0x2)
    ex = v.arch.exception
    assert ex.injected and ex.vector == 14 and ex.has_error_code and ex.error_code == 0x2
    assert any("kvm_requeue_exception" in a for a in v.rec.alarms)


def test_ack_interrupt_on_exit_carries_the_vector():
    """vmx_check_nested_events acknowledges the interrupt itself when L1
    asks for it (VM_EXIT_ACK_INTR_ON_EXIT, which the scenario's L1 never
    sets): the exit information holds the vector, the IRR loses it."""
    from impls.arch.vmx import INTR_INFO_VALID
    from impls.current.state import VM_EXIT_ACK_INTR_ON_EXIT

    v = vcpu_after(sc("vmx", "l1.intercept intr=1\nl1.vmentry\n"))
    v.vmx.nested.vmcs12.vm_exit_controls |= VM_EXIT_ACK_INTR_ON_EXIT
    v.kvm_apic_set_irq(0x31)
    assert v.vmx_check_nested_events() == 0
    assert not v.is_guest_mode() and v.vmx.nested.vmcs12.vm_exit_intr_info == INTR_INFO_VALID | 0x31
    assert 0x31 not in v.apic.irr


def test_vmx_has_nested_events():
    """has_events(vcpu, true): MTF or the preemption timer (neither comes
    from the scenario language)."""
    v = vcpu_after(sc("vmx", "l1.vmentry\n"))
    assert not v.vmx_has_nested_events(True)
    v.vmx.nested.mtf_pending = True
    assert v.vmx_has_nested_events(True)
