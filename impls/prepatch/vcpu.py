"""The vCPU of the pre-patch port: KVM's state plus the x86, VMX and SVM code
as methods, and the kvm_x86_ops / nested_ops tables that pick the vendor.

A later port (the RFC, 6.1) subclasses `Vcpu` and overrides the functions
its patches change; the ops tables are built per instance from method names,
so an override is picked up by every caller, direct or through an op.
"""
from __future__ import annotations

from types import SimpleNamespace

from impls.arch import AC, DB, MC, PF, UD
from impls.hw import cpu as hw
from impls.origin import glue, origin
from impls.prepatch.state import (
    HF_GIF_MASK, HF_SMM_MASK, KVM_REQ_EVENT, KVM_REQ_TRIPLE_FAULT, TREE, KvmLapic, KvmRun, KvmVcpuArch, VcpuSvm, VcpuVmx,
)
from impls.prepatch.svm import Svm
from impls.prepatch.svm_nested import SvmNested
from impls.prepatch.vmx import Vmx
from impls.prepatch.vmx_nested import VmxNested
from impls.prepatch.x86 import X86

#: kvm_x86_ops hook -> method, per vendor (vmx_x86_ops / svm_x86_ops).
VMX_X86_OPS = {
    "queue_exception": "vmx_queue_exception",
    "set_irq": "vmx_inject_irq",
    "set_nmi": "vmx_inject_nmi",
    "get_nmi_mask": "vmx_get_nmi_mask",
    "set_nmi_mask": "vmx_set_nmi_mask",
    "nmi_allowed": "vmx_nmi_allowed",
    "interrupt_allowed": "vmx_interrupt_allowed",
    "enable_nmi_window": "vmx_enable_nmi_window",
    "enable_irq_window": "vmx_enable_irq_window",
    "get_interrupt_shadow": "vmx_get_interrupt_shadow",
    "set_interrupt_shadow": "vmx_set_interrupt_shadow",
    "cancel_injection": "vmx_cancel_injection",
    "run": "vmx_vcpu_run",
    "handle_exit": "vmx_handle_exit",
    "request_immediate_exit": "vmx_request_immediate_exit",
    "skip_emulated_instruction": "vmx_skip_emulated_instruction",
    "smi_allowed": "vmx_smi_allowed",
    "pre_enter_smm": "vmx_pre_enter_smm",
    "pre_leave_smm": "vmx_pre_leave_smm",
    "enable_smi_window": "vmx_enable_smi_window",
    "apic_init_signal_blocked": "vmx_apic_init_signal_blocked",
}
VMX_NESTED_OPS = {
    "check_events": "vmx_check_nested_events",
    "hv_timer_pending": "nested_vmx_preemption_timer_pending",
}
SVM_X86_OPS = {
    "queue_exception": "svm_queue_exception",
    "set_irq": "svm_set_irq",
    "set_nmi": "svm_inject_nmi",
    "get_nmi_mask": "svm_get_nmi_mask",
    "set_nmi_mask": "svm_set_nmi_mask",
    "nmi_allowed": "svm_nmi_allowed",
    "interrupt_allowed": "svm_interrupt_allowed",
    "enable_nmi_window": "svm_enable_nmi_window",
    "enable_irq_window": "svm_enable_irq_window",
    "get_interrupt_shadow": "svm_get_interrupt_shadow",
    "set_interrupt_shadow": "svm_set_interrupt_shadow",
    "cancel_injection": "svm_cancel_injection",
    "run": "svm_vcpu_run",
    "handle_exit": "svm_handle_exit",
    "request_immediate_exit": "svm_request_immediate_exit",
    "skip_emulated_instruction": "svm_skip_emulated_instruction",
    "smi_allowed": "svm_smi_allowed",
    "pre_enter_smm": "svm_pre_enter_smm",
    "pre_leave_smm": "svm_pre_leave_smm",
    "enable_smi_window": "svm_enable_smi_window",
    "apic_init_signal_blocked": "svm_apic_init_signal_blocked",
}
SVM_NESTED_OPS = {
    "check_events": "svm_check_nested_events",
    "hv_timer_pending": "svm_hv_timer_pending",
}


#: (Vcpu class, vendor) -> (kvm_x86_ops, nested_ops), see Vcpu._ops.
_OPS: dict = {}


class Kvm:
    """struct kvm_arch, the one VM-wide flag used here."""

    __slots__ = ("exception_payload_enabled",)

    def __init__(self, exception_payload_enabled: bool):
        self.exception_payload_enabled = exception_payload_enabled


class Vcpu(X86, Vmx, VmxNested, Svm, SvmNested):
    """struct kvm_vcpu with the pre-patch event code."""

    X86_OPS = {"vmx": VMX_X86_OPS, "svm": SVM_X86_OPS}
    NESTED_OPS = {"vmx": VMX_NESTED_OPS, "svm": SVM_NESTED_OPS}

    def __init__(self, config, cpu: hw.Cpu, env, rec):
        self.vendor = config.vendor
        self.cpu, self.env, self.rec = cpu, env, rec
        self.kvm = Kvm("exception_payload" in config.caps)
        self.arch = KvmVcpuArch()
        self.requests = 0
        self.apic = KvmLapic()
        self.pending_external_vector = -1
        self.run = KvmRun()
        self.blocked = False  # kvm_vcpu_block found nothing to wake the vCPU (impls.hw.environment, "HLT")
        self.enable_ept = self.npt_enabled = config.npt
        self.walk_mmu_inject_page_fault = "kvm_inject_page_fault"
        self.kvm_x86_ops, self.nested_ops = self._ops(self.vendor)
        if self.vendor == "vmx":
            self.vmx, self.svm = VcpuVmx(), None
            self.guest = self.vmx_guest
            self.vmx_vcpu_reset()
        else:
            self.vmx, self.svm = None, VcpuSvm()
            self.guest = self.svm_guest
            self.init_vmcb()
        self.kvm_make_request(KVM_REQ_EVENT)  # kvm_vcpu_reset

    @classmethod
    @glue("builds the kvm_x86_ops / nested_ops tables from the method names")
    def _ops(cls, vendor: str) -> tuple[SimpleNamespace, SimpleNamespace]:
        """kvm_x86_ops and nested_ops for this class and vendor, built once
        (KVM's are static too): one hook a method name of `X86_OPS` /
        `NESTED_OPS`, so a port's override is what the table holds."""
        key = (cls, vendor)
        ops = _OPS.get(key)
        if ops is None:
            ops = _OPS[key] = (
                SimpleNamespace(**{hook: getattr(cls, name) for hook, name in cls.X86_OPS[vendor].items()}),
                SimpleNamespace(**{hook: getattr(cls, name) for hook, name in cls.NESTED_OPS[vendor].items()}))
        return ops

    @glue("for the driver: whether KVM still holds an event it must deliver")
    def event_in_flight(vcpu) -> bool:
        """For the driver (not a kernel function): KVM holds an event it must
        still deliver -- an exception pending or injected, an NMI or
        interrupt injected, a nested run pending, a triple fault requested --
        or the vCPU is in SMM (its handler has not executed RSM yet)."""
        a = vcpu.arch
        nested = vcpu.svm.nested if vcpu.svm is not None else vcpu.vmx.nested
        return bool(a.exception.pending or a.exception.injected or a.nmi_injected or a.interrupt.injected
                    or nested.nested_run_pending or vcpu.requests & KVM_REQ_TRIPLE_FAULT
                    or a.hflags & HF_SMM_MASK)

    @origin("arch/x86/kvm/vmx/vmx.c", "vmx_vcpu_reset", tree=TREE)
    def vmx_vcpu_reset(vcpu) -> None:
        vcpu.update_exception_bitmap()

    @origin("arch/x86/kvm/svm/svm.c", "init_vmcb", tree=TREE)
    def init_vmcb(vcpu) -> None:
        """L0's intercepts for L1: INTR, NMI, SHUTDOWN, RSM, HLT (no
        halt-in-guest), VMRUN, VMMCALL, STGI/CLGI (no vGIF), #UD, #MC, #AC,
        #DB, and #PF with shadow paging; GIF set.  (L0's SMI intercept, for
        physical SMIs, is left out: the simulated CPU has none.)"""
        vmcb = vcpu.svm.vmcb
        vmcb.intercepts = {hw.INTERCEPT_INTR, hw.INTERCEPT_NMI, hw.INTERCEPT_SHUTDOWN, hw.INTERCEPT_VMRUN,
                           hw.INTERCEPT_VMMCALL, hw.INTERCEPT_STGI, hw.INTERCEPT_CLGI, hw.INTERCEPT_RSM,
                           hw.INTERCEPT_HLT}
        vmcb.intercept_exceptions = (1 << UD) | (1 << MC) | (1 << AC) | (1 << DB)
        if not vcpu.npt_enabled:
            vmcb.intercept_exceptions |= 1 << PF
        vmcb.int_ctl = hw.V_INTR_MASKING_MASK
        vcpu.arch.hflags |= HF_GIF_MASK  # enable_gif
