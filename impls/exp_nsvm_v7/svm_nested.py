"""Two patches of Yosry Ahmed's nSVM fixes series, v7 (kvm@vger.kernel.org,
2026-03-03, <20260303003421.2185681-1-yosry@kernel.org>; "Nested SVM fixes,
cleanups, and hardening" up to v4), as overrides of the 6.18 port's
arch/x86/kvm/svm/nested.c:

* patch 17/26, "KVM: nSVM: Add missing consistency check for EVENTINJ"
  (merged as 7e79f71bca5c): VMRUN fails with VMEXIT_INVALID when EVENTINJ
  is valid and has a reserved type, or type 3 (exception) with a vector
  that is not an exception.  Valid exceptions are every defined vector but
  #CP, which needs shadow stacks in the guest's CPUID, and #VC, which
  needs SEV-ES (`nested_svm_event_inj_valid_exept`).
* patch 10/26, "KVM: nSVM: Clear GIF on nested #VMEXIT(INVALID)" (merged as
  f85a6ce06e4a): that failure clears GIF, as every #VMEXIT does.

The rest of the series (LBR save/restore, the vmcb12 mapping failures,
the cache of vmcb12's fields, renames) touches nothing the port models.

The guest's CPUID: the port's VMM sets none (impls.hw.environment), but
the scenario's vCPU raises #CP (`exception #CP`), which on AMD needs
shadow stacks; so the port takes X86_FEATURE_SHSTK as set
(`Svm618Evtinj.guest_has_shstk`).  `impls.exp_nsvm_v7.VcpuNoShstk` is
the same port for a guest without it.  SEV-ES is off (no #VC here).
"""
from __future__ import annotations

from impls.api import EntryFailed
from impls.arch import AC, BP, BR, DB, DE, DF, GP, MC, NP, OF, PF, SS, TS, UD
from impls.arch import svm as asvm
from impls.hw import cpu as hw
from impls.origin import origin
from impls.prepatch.svm import (
    SVM_EVTINJ_TYPE_EXEPT, SVM_EVTINJ_TYPE_INTR, SVM_EVTINJ_TYPE_MASK, SVM_EVTINJ_TYPE_NMI, SVM_EVTINJ_TYPE_SOFT,
    SVM_EVTINJ_VALID, SVM_EVTINJ_VEC_MASK,
)
from impls.upstream.state import X86_TRAP_VC

TREE = "nSVM fixes v7 2026-03-03"
POSTED = "kvm@vger.kernel.org <20260303003421.2185681-1-yosry@kernel.org>"
NESTED_C = "arch/x86/kvm/svm/nested.c"

NM, MF, XM, CP = 7, 16, 19, 21
HV, SX = 28, 30  # AMD's hypervisor-injection and security exceptions

#: The vectors patch 17 takes as exceptions whatever the guest's CPUID.
ALWAYS_VALID = frozenset({DE, DB, BP, OF, BR, UD, NM, DF, TS, NP, SS, GP, PF, MF, AC, MC, XM, HV, SX})


class SvmNestedEvtinj:
    """The two patches, as methods of the vCPU (before the 6.18 mixins)."""

    #: guest_cpu_cap_has(X86_FEATURE_SHSTK), guest_cpu_cap_has(X86_FEATURE_SEV_ES).
    guest_has_shstk = True
    guest_has_sev_es = False

    @origin(NESTED_C, "nested_svm_event_inj_valid_exept", tree=TREE, read=f"{POSTED} patch 17")
    def nested_svm_event_inj_valid_exept(vcpu, vector: int) -> bool:
        """A vector L1 may inject as an exception: a defined one, #CP only
        with shadow stacks and #VC only with SEV-ES in the guest's CPUID,
        never NMI's vector 2, #CSO's 9 or a reserved one."""
        if vector in ALWAYS_VALID:
            return True
        if vector == CP:
            return vcpu.guest_has_shstk
        if vector == X86_TRAP_VC:
            return vcpu.guest_has_sev_es
        return False

    @origin(NESTED_C, "nested_svm_check_event_inj", tree=TREE, read=f"{POSTED} patch 17")
    def nested_svm_check_event_inj(vcpu, event_inj: int) -> bool:
        """EVENTINJ is consistent: not valid, or a defined type, and an
        exception vector with type 3."""
        if not event_inj & SVM_EVTINJ_VALID:
            return True
        type_ = event_inj & SVM_EVTINJ_TYPE_MASK
        vector = event_inj & SVM_EVTINJ_VEC_MASK
        if type_ not in (SVM_EVTINJ_TYPE_INTR, SVM_EVTINJ_TYPE_NMI, SVM_EVTINJ_TYPE_EXEPT, SVM_EVTINJ_TYPE_SOFT):
            vcpu.rec.note(f"nested_svm_check_event_inj: EVENTINJ type {type_ >> 8} is reserved")
            return False
        if type_ == SVM_EVTINJ_TYPE_EXEPT and not vcpu.nested_svm_event_inj_valid_exept(vector):
            vcpu.rec.note(f"nested_svm_check_event_inj: vector {vector} is not an exception for this guest")
            return False
        return True

    @origin(NESTED_C, "nested_vmcb_check_controls", tree=TREE, read=f"{POSTED} patch 17")
    def nested_vmcb_checks(vcpu, vmcb12) -> bool:
        """The control checks the port models (L1 intercepts VMRUN; ASID,
        nested paging and the permission maps are always valid here), then
        the new EVENTINJ check."""
        if hw.INTERCEPT_VMRUN not in vmcb12.control.intercepts:
            return False
        return vcpu.nested_svm_check_event_inj(vmcb12.control.event_inj)

    @origin(NESTED_C, "nested_svm_vmrun", tree=TREE, read=f"{POSTED} patch 10")
    def nested_svm_vmrun(vcpu) -> int:
        """6.18's VMRUN with patch 10: a failed consistency check is a
        #VMEXIT(INVALID) that clears GIF."""
        svm = vcpu.svm
        vmcb12 = svm.nested.vmcb12
        ret = vcpu.kvm_skip_emulated_instruction()
        if not vcpu.nested_vmcb_checks(vmcb12):
            vmcb12.control.exit_code = hw.SVM_EXIT_ERR
            vmcb12.control.exit_info_1 = vmcb12.control.exit_info_2 = 0
            vcpu.svm_set_gif(False)
            vcpu.rec.observe(1, EntryFailed(asvm.exit_name(hw.SVM_EXIT_ERR)))
            return ret
        svm.nested.hsave_rflags_if = vcpu.cpu.lv[1].rflags_if  # vmcb01->save.rflags
        svm.nested.hsave_rflags_tf = vcpu.svm_get_rflags_tf()
        svm.nested.hsave.copy_control_from(svm.vmcb)
        svm.nested.nested_run_pending = True
        vcpu.enter_svm_guest_mode(vmcb12)
        return ret
