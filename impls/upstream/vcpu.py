"""The vCPU of the 6.1 port: the pre-patch `Vcpu` with the 6.1 overrides in
front, the 6.1 state, and the 6.1 kvm_x86_ops / nested_ops tables.

Method resolution puts every 6.1 mixin before the 5.11 classes, so a
function 6.1 changed is the 6.1 one for every caller, direct or through an
op; a function 6.1 left alone is inherited from `impls.prepatch`.
"""
from __future__ import annotations

from types import SimpleNamespace

from impls.hw import cpu as hw
from impls.origin import glue, origin
from impls.prepatch.vcpu import SVM_X86_OPS, VMX_X86_OPS
from impls.prepatch.vcpu import Vcpu as Vcpu511
from impls.upstream.state import (
    HF_GIF_MASK, KVM_REQ_EVENT, STABLE, TREE, Kvm, KvmLapic, KvmRun, KvmVcpuArch, VcpuSvm61, VcpuVmx,
)
from impls.upstream.svm import Svm61
from impls.upstream.svm_nested import SvmNested61
from impls.upstream.vmx import Vmx61
from impls.upstream.vmx_nested import VmxNested61
from impls.upstream.x86 import X86_61


@glue("builds a 6.1 ops table from the 5.11 one (the hooks' method names)")
def _renamed(ops: dict, **new: str) -> dict:
    """A 5.11 ops table with the hooks 6.1 renamed."""
    table = {k: v for k, v in ops.items()
             if k not in ("queue_exception", "set_irq", "set_nmi", "pre_enter_smm", "pre_leave_smm")}
    table.update(new)
    return table


#: vmx_x86_ops / svm_x86_ops of 6.1: queue_exception, set_irq and set_nmi
#: became inject_exception, inject_irq and inject_nmi, pre_enter_smm and
#: pre_leave_smm became enter_smm and leave_smm.
VMX_X86_OPS_61 = _renamed(VMX_X86_OPS, inject_exception="vmx_inject_exception", inject_irq="vmx_inject_irq",
                          inject_nmi="vmx_inject_nmi", enter_smm="vmx_enter_smm", leave_smm="vmx_leave_smm")
SVM_X86_OPS_61 = _renamed(SVM_X86_OPS, inject_exception="svm_inject_exception", inject_irq="svm_inject_irq",
                          inject_nmi="svm_inject_nmi", enter_smm="svm_enter_smm", leave_smm="svm_leave_smm")
#: vmx_nested_ops / svm_nested_ops of 6.1 (the hooks used here).
VMX_NESTED_OPS_61 = {
    "is_exception_vmexit": "nested_vmx_is_exception_vmexit",
    "check_events": "vmx_check_nested_events",
    "has_events": "vmx_has_nested_events",
    "triple_fault": "nested_vmx_triple_fault",
}
SVM_NESTED_OPS_61 = {
    "is_exception_vmexit": "nested_svm_is_exception_vmexit",
    "check_events": "svm_check_nested_events",
    "has_events": None,  # svm_nested_ops has none
    "triple_fault": "nested_svm_triple_fault",
}


class RemovedIn61:
    """A 5.11 function that 6.1 deleted or replaced: reaching it from
    inherited code would mean a caller was not ported, so it raises."""

    def __init__(self, replaced_by: str):
        self.replaced_by = replaced_by
        self.name = "?"

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, objtype=None):
        raise NotImplementedError(f"{self.name} is not in Linux 6.1 (see {self.replaced_by})")


class Vcpu(X86_61, Vmx61, VmxNested61, Svm61, SvmNested61, Vcpu511):
    """struct kvm_vcpu with the 6.1 event code."""

    X86_OPS = {"vmx": VMX_X86_OPS_61, "svm": SVM_X86_OPS_61}
    NESTED_OPS = {"vmx": VMX_NESTED_OPS_61, "svm": SVM_NESTED_OPS_61}

    # 5.11 functions that are gone in 6.1.
    inject_pending_event = RemovedIn61("kvm_check_and_inject_events")
    vmx_queue_exception = RemovedIn61("vmx_inject_exception")
    svm_queue_exception = RemovedIn61("svm_inject_exception")
    svm_set_irq = RemovedIn61("svm_inject_irq")
    nested_vmx_check_exception = RemovedIn61("nested_vmx_is_exception_vmexit")
    vmx_inject_page_fault_nested = RemovedIn61("kvm_multiple_exception's morph to exception_vmexit")
    vmx_pending_dbg_trap = RemovedIn61("vmx_get_pending_dbg_trap")
    nested_exit_on_exception = RemovedIn61("nested_svm_is_exception_vmexit")
    nested_vmcb_save_pending_event = RemovedIn61("nested_save_pending_event_to_vmcb12")
    nested_prepare_vmcb_control = RemovedIn61("nested_vmcb02_prepare_control")
    nested_svm_nmi = RemovedIn61("nested_svm_simple_vmexit")
    nested_svm_smi = RemovedIn61("nested_svm_simple_vmexit")
    vmx_pre_enter_smm = RemovedIn61("vmx_enter_smm")
    vmx_pre_leave_smm = RemovedIn61("vmx_leave_smm")
    svm_pre_enter_smm = RemovedIn61("svm_enter_smm")
    svm_pre_leave_smm = RemovedIn61("svm_leave_smm")
    emulator_set_hflags = RemovedIn61("emulator_exiting_smm")
    emulator_pre_leave_smm = RemovedIn61("emulator_leave_smm")
    emulator_post_leave_smm = RemovedIn61("emulator_exiting_smm")
    nested_svm_intr = RemovedIn61("nested_svm_simple_vmexit")
    nested_svm_init = RemovedIn61("nested_svm_simple_vmexit")
    kvm_vcpu_latch_init = RemovedIn61("kvm_apic_init_sipi_allowed")
    kvm_apic_has_events = RemovedIn61("kvm_apic_has_pending_init_or_sipi")

    def __init__(self, config, cpu: hw.Cpu, env, rec):
        self.vendor = config.vendor
        self.cpu, self.env, self.rec = cpu, env, rec
        self.kvm = Kvm("exception_payload" in config.caps, "triple_fault_event" in config.caps)
        self.arch = KvmVcpuArch()
        self.requests = 0
        self.apic = KvmLapic()
        self.pending_external_vector = -1
        self.run = KvmRun()
        self.blocked = False  # kvm_vcpu_block found nothing to wake the vCPU (impls.hw.environment, "HLT")
        self.enable_ept = self.npt_enabled = config.npt
        self.walk_mmu_inject_page_fault = "kvm_inject_page_fault"
        cls = type(self)
        self.kvm_x86_ops = SimpleNamespace(
            **{hook: getattr(cls, name) for hook, name in self.X86_OPS[self.vendor].items()})
        self.nested_ops = SimpleNamespace(
            **{hook: name and getattr(cls, name) for hook, name in self.NESTED_OPS[self.vendor].items()})
        if self.vendor == "vmx":
            self.vmx, self.svm = VcpuVmx(), None
            self.guest = self.vmx_guest
            self.vmx_vcpu_reset()
        else:
            self.vmx, self.svm = None, VcpuSvm61()
            self.guest = self.svm_guest
            self.init_vmcb()
        self.kvm_make_request(KVM_REQ_EVENT)  # kvm_vcpu_reset

    @origin("include/linux/kvm_host.h", "kvm_clear_request", tree=TREE, read=STABLE)
    def kvm_clear_request(vcpu, req: int) -> None:
        vcpu.requests &= ~req


_ = (HF_GIF_MASK,)
