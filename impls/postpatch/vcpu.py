"""The vCPU of the post-patch port: the pre-patch `Vcpu` with the RFC's
overrides mixed in front of it, the RFC's state layout, and the new nested
op `deliver_exception` in the nested_ops tables.

Every function the four patches change is overridden in the module named
after its kernel file (`x86`, `svm`, `svm_nested`, `vmx`, `vmx_nested`,
`paging_tmpl` says why patch 2/4 needs nothing); everything else is the
pre-patch port's, shared.  The ops tables are built per instance from
method names, so an override reaches callers that go through an op too.
"""
from __future__ import annotations

from impls.origin import glue

from impls.postpatch.state import CAPS, Kvm, KvmVcpuArch
from impls.prepatch.state import HF_SMM_MASK, KVM_REQ_TRIPLE_FAULT
from impls.postpatch.svm import SvmRfc
from impls.postpatch.svm_nested import SvmNestedRfc
from impls.postpatch.vmx import VmxRfc
from impls.postpatch.vmx_nested import VmxNestedRfc
from impls.postpatch.x86 import X86Base, X86Rfc
from impls.prepatch import vcpu as pre

VMX_NESTED_OPS = {**pre.VMX_NESTED_OPS, "deliver_exception": "nested_vmx_deliver_nested_exception"}
SVM_NESTED_OPS = {**pre.SVM_NESTED_OPS, "deliver_exception": "svm_deliver_nested_exception"}


class Vcpu(X86Rfc, X86Base, VmxRfc, VmxNestedRfc, SvmRfc, SvmNestedRfc, pre.Vcpu):
    """struct kvm_vcpu with the RFC's event code."""

    NESTED_OPS = {"vmx": VMX_NESTED_OPS, "svm": SVM_NESTED_OPS}
    #: The state layout (a later version of the series changes it).
    ARCH = KvmVcpuArch
    KVM = Kvm

    def __init__(self, config, cpu, env, rec):
        super().__init__(config, cpu, env, rec)
        # The RFC's struct kvm_vcpu_arch (the pre-patch constructor built the
        # old one; nothing is queued yet, everything else carries over).
        self.arch = self.ARCH.taking_over(self.arch)
        # The VMM enables the scenario's caps with KVM_ENABLE_CAP; a cap this
        # kernel does not know is refused (-EINVAL) and stays off.
        self.kvm = self.KVM()
        for cap in sorted(config.caps):
            if cap in CAPS:
                self.kvm_vm_ioctl_enable_cap(CAPS[cap], 1)

    @glue("for the driver: whether KVM still holds an event it must deliver")
    def event_in_flight(vcpu) -> bool:
        """For the driver (not a kernel function): as the pre-patch one, with
        the two exception slots (and SMM, whose handler has not executed
        RSM yet)."""
        a = vcpu.arch
        nested = vcpu.svm.nested if vcpu.svm is not None else vcpu.vmx.nested
        return bool(a.pending_exception.valid or a.injected_exception.valid or a.nmi_injected
                    or a.interrupt.injected or nested.nested_run_pending or vcpu.requests & KVM_REQ_TRIPLE_FAULT
                    or a.hflags & HF_SMM_MASK)
