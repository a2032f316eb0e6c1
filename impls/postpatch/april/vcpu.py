"""The vCPU of the April repost's port: the February post-patch vCPU with the
repost's differences mixed in front (`x86`, `svm_nested`, `vmx_nested`), its
state layout (`state`), and the nested op renamed
`deliver_exception_as_vmexit`.  svm.c / vmx.c: the repost's queue_exception
hunks (sample the injected exception, WARN_ON_ONCE on a pending one instead
of delivering the payload) match the February port's, which are reused.
"""
from __future__ import annotations

from impls.postpatch import vcpu as feb
from impls.postpatch.april.state import KvmVcpuArch
from impls.postpatch.april.svm_nested import SvmNestedApril
from impls.postpatch.april.vmx_nested import VmxNestedApril
from impls.postpatch.april.x86 import X86April
from impls.prepatch import vcpu as pre
from impls.prepatch.vcpu import Kvm

VMX_NESTED_OPS = {**pre.VMX_NESTED_OPS, "deliver_exception_as_vmexit": "nested_vmx_deliver_exception_as_vmexit"}
SVM_NESTED_OPS = {**pre.SVM_NESTED_OPS, "deliver_exception_as_vmexit": "svm_deliver_nested_exception_as_vmexit"}


class AprilKvm(Kvm):
    """struct kvm_arch: no new field in the repost."""

    __slots__ = ()

    def __init__(self):
        super().__init__(False)


class Vcpu(X86April, SvmNestedApril, VmxNestedApril, feb.Vcpu):
    """struct kvm_vcpu with the April repost's event code."""

    NESTED_OPS = {"vmx": VMX_NESTED_OPS, "svm": SVM_NESTED_OPS}
    ARCH = KvmVcpuArch
    KVM = AprilKvm
