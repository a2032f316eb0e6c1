"""The upstream port: KVM's event injection as the v6.1 tag has it (after Sean
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
state of `state`.  Each module's docstring says what its file changed since 5.11;
every function ported here names its 6.1 origin (`tree="6.1"`) and the copy
it was read from (`read=`), and every 5.11 function the port still runs is
listed, with where its 6.1 version was read, in `reused` (checked by
tests/test_fidelity.py).  The
simulated CPU (`impls.hw`) and the scenario driver are shared; `driver`
extends the driver with what 6.1 adds (exception_vmexit in flight, the
KVM_RUN prologue).  Simplifications are those of `impls.hw.environment`.

Sources (SOURCES.md section 3).  First written from the series' commits
(x86.c e746c1f1 and 7709aba8, the nested files 7709aba8, svm.c d4963e31:
kvm/queue, Aug-Sep 2022), then re-read for the v6.1 tag (issue 13), which is
not stored: x86.c at 26844fee (the merge window) plus the 6.1-rc commits on
the same functions as posted (92e7d5c83aff, dea0d5a2fde6), and Linux 6.1.55
(mjsmar/snpport-6.1.55 f91cf3e9) for everything unchanged between the tag
and 6.1.55.  What the re-reading changed (the series' state is not 6.1):

* the nested triple fault (92e7d5c83aff, 6.1-rc7): the vendor hooks clear
  KVM_REQ_TRIPLE_FAULT, SVM only when L1 intercepts SHUTDOWN (else the VM
  shuts down), the callers test the request; after the nested exit
  vcpu_enter_guest returns an uninitialised value (fixed later by
  df0bb47baa95), taken as "go on";
* kvm_vcpu_running lost its nested-events check (26844fee);
* the end-of-ladder WARN exempts a requested triple fault (dea0d5a2fde6);
* nested_ops->has_events replaced hv_timer_pending (5b4ac1a1);
* the entry is cancelled on any pending request (kvm_vcpu_exit_request),
  which the 5.11 port models as the kick only.

6.1.55 also carries fixes the tag does not, which the port leaves out:
6c41468c7c12 and 80962ec912db (real-mode error codes, 6.1.24) and
df0bb47baa95.  Not followed, as unreachable here: KVM_SET_VCPU_EVENTS'
kvm_leave_nested when userspace toggles SMM (the VMM sets events before the
nested state, so there is nothing to leave).
"""
from __future__ import annotations

from impls.prepatch import Prepatch
from impls.upstream.driver import Driver
from impls.upstream.reused import REUSED_FROM_511
from impls.upstream.vcpu import Vcpu


class Upstream(Prepatch):
    name = "upstream"
    origin = "Linux v6.1 (x86.c at 26844fee plus the 6.1-rc fixes; the rest read in 6.1.55 f91cf3e9, without the 6.1.y fixes the tag lacks)"
    summary = "port of KVM's event injection as landed in 6.1 (exception_vmexit), on the simulated CPU"

    vcpu_class = Vcpu
    driver_class = Driver

    kernel_tree = "6.1"
    #: The 5.11 functions 6.1 has unchanged for what the port models.
    takes_over = {"5.11-rc7": REUSED_FROM_511}
