"""The vCPU of the 6.18 port: the 6.1 `Vcpu` with the 6.18 overrides in
front and the 6.18 kvm_x86_ops / nested_ops tables.

Method resolution puts every 6.18 mixin before the 6.1 vCPU, so a function
6.18 changed is the 6.18 one for every caller, direct or through an op; a
function 6.18 left alone is inherited from `impls.upstream` (and, through
it, from `impls.prepatch`).
"""
from __future__ import annotations

from impls.current.smm import Smm618
from impls.current.svm import Svm618
from impls.current.svm_nested import SvmNested618
from impls.current.vmx import Vmx618
from impls.current.vmx_nested import VmxNested618
from impls.current.x86 import X86_618
from impls.origin import glue
from impls.upstream.vcpu import SVM_NESTED_OPS_61, SVM_X86_OPS_61, VMX_NESTED_OPS_61, VMX_X86_OPS_61
from impls.upstream.vcpu import Vcpu as Vcpu61


@glue("builds a 6.18 nested_ops table from the 6.1 one (the hooks' method names)")
def _nested_ops(ops: dict, has_events: str | None) -> dict:
    """A 6.1 nested_ops table with hv_timer_pending renamed has_events (it
    gained a `for_injection` argument)."""
    table = {k: v for k, v in ops.items() if k != "hv_timer_pending"}
    table["has_events"] = has_events
    return table


#: vmx_x86_ops / svm_x86_ops of 6.18 (vmx/main.c's vt_x86_ops for VMX): the
#: vNMI hooks are SVM's only (KVM_X86_OP_OPTIONAL_RET0 elsewhere).
VMX_X86_OPS_618 = dict(VMX_X86_OPS_61)
SVM_X86_OPS_618 = dict(SVM_X86_OPS_61, is_vnmi_pending="svm_is_vnmi_pending",
                       set_vnmi_pending="svm_set_vnmi_pending")
#: vmx_nested_ops / svm_nested_ops of 6.18 (the hooks used here).
VMX_NESTED_OPS_618 = _nested_ops(VMX_NESTED_OPS_61, "vmx_has_nested_events")
SVM_NESTED_OPS_618 = _nested_ops(SVM_NESTED_OPS_61, None)  # svm_nested_ops has no has_events


class RemovedIn618:
    """A 6.1 function that 6.18 deleted or replaced: reaching it from
    inherited code would mean a caller was not ported, so it raises."""

    def __init__(self, replaced_by: str):
        self.replaced_by = replaced_by
        self.name = "?"

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, objtype=None):
        raise NotImplementedError(f"{self.name} is not in Linux 6.18 (see {self.replaced_by})")


class Vcpu(X86_618, Smm618, Vmx618, VmxNested618, Svm618, SvmNested618, Vcpu61):
    """struct kvm_vcpu with the 6.18 event code."""

    X86_OPS = {"vmx": VMX_X86_OPS_618, "svm": SVM_X86_OPS_618}
    NESTED_OPS = {"vmx": VMX_NESTED_OPS_618, "svm": SVM_NESTED_OPS_618}

    # 6.1 functions that are gone in 6.18.
    kvm_requeue_exception_e = RemovedIn618("kvm_requeue_exception")
    emulator_exiting_smm = RemovedIn618("emulator_leave_smm")
    emulator_get_hflags = RemovedIn618("is_smm / emulator_leave_smm")
