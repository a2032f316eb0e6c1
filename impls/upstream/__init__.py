"""The upstream port: KVM's event injection as it landed in Linux 6.1 (Sean
Christopherson's series "KVM: x86: Event/exception fixes and cleanups"):
vcpu->arch.exception as a named struct kvm_queued_exception, a second one,
`exception_vmexit`, into which an exception L1 intercepts is morphed at
queue time (nested_ops->is_exception_vmexit), triple faults as pending
events handed to L1 through nested_ops->triple_fault,
KVM_CAP_X86_TRIPLE_FAULT_EVENT, and kvm_check_and_inject_events.

It is the pre-patch port (`impls.prepatch`, Linux 5.11) with every function
6.1 changed overridden: `vcpu.Vcpu` subclasses the pre-patch vCPU with the
mixins `x86` (x86.c, x86.h), `vmx` / `vmx_nested` (vmx/vmx.c,
vmx/nested.c), `svm` / `svm_nested` (svm/svm.c, svm/nested.c), on the 6.1
state of `state`.  Each module's docstring lists which 5.11 functions of its
file are reused unchanged (checked against the 6.1 source) and which differ,
every function ported here names its 6.1 origin (`tree="6.1"`).  The
simulated CPU (`impls.hw`) and the scenario driver are shared; `driver`
extends the driver with what 6.1 adds (exception_vmexit in flight, the
KVM_RUN prologue).  Simplifications are those of `impls.hw.environment`.

Sources (SOURCES.md section 3): x86.c e746c1f1 (cross-checked at 7709aba8),
x86.h 7709aba8 plus the end-state kvm_is_exception_pending, vmx/nested.c,
vmx/vmx.c and svm/nested.c 7709aba8, svm/svm.c d4963e31.
"""
from __future__ import annotations

from impls.prepatch import Prepatch
from impls.upstream.driver import Driver
from impls.upstream.reused import REUSED_FROM_511
from impls.upstream.vcpu import Vcpu


class Upstream(Prepatch):
    name = "upstream"
    origin = "Linux 6.1 (x86.c e746c1f1, x86.h/vmx/svm nested 7709aba8, svm.c d4963e31)"
    summary = "port of KVM's event injection as landed in 6.1 (exception_vmexit), on the simulated CPU"

    vcpu_class = Vcpu
    driver_class = Driver

    kernel_tree = "6.1"
    #: The 5.11 functions 6.1 has unchanged for what the port models.
    takes_over = {"5.11-rc7": REUSED_FROM_511}
