"""Port of the event paths of arch/x86/kvm/smm.c (new in 6.2: SMM left
x86.c and emulate.c) and of em_rsm in arch/x86/kvm/emulate.c, as of Linux
6.18 (read at the v6.18 release: clywm520/6.18.y 947ac181).

What changed since 6.1, for what a guest can see:

* The SMRAM state-save area holds the interrupt shadow (`int_shadow`,
  810253988e9e, 6.2): `enter_smm_save_state_64` saves the vCPU's shadow,
  `enter_smm` then clears it for the SMM handler, and RSM's
  `rsm_load_state_64` clears the shadow and hands the saved one to the
  emulator's interruptibility, which x86_emulate_instruction's writeback
  restores (toggle_interruptibility).  In 6.1 an SMI taken in an STI or
  MOV-SS shadow lost it: an interrupt the shadow held came in after RSM
  before the next instruction.
* RSM: `em_rsm` only checks SMM and calls `emulator_leave_smm`, which
  now does everything 6.1's em_rsm did (read SMRAM, unmask NMIs unless SMM
  was entered with them masked, kvm_smm_changed(false), the vendor's
  leave_smm, the state load); a failure of either is a triple fault, and
  6.18 first leaves guest mode (kvm_leave_nested) if the vendor had
  re-entered it.  That failure cannot happen here: both vendors' leave_smm
  and the state load succeed on the simulated CPU.
* `kvm_smm_changed` and `process_smi` moved here unchanged for the event
  paths (kvm_smm_changed also stops trusting PDPTRs from userspace).

The state-save area is reduced to what the event paths can see: RFLAGS
(IF, TF) and the interrupt shadow.  The 64-bit format is used (the guest
has long mode in its CPUID).  Segment, control-register and EFER
handling are not modelled (impls.hw.environment).
"""
from __future__ import annotations

from impls.api import SmiHandled
from impls.origin import origin
from impls.prepatch.state import HF_SMM_INSIDE_NMI_MASK, HF_SMM_MASK
from impls.prepatch.x86 import X86EMUL_CONTINUE, X86EMUL_PROPAGATE_FAULT, X86EMUL_UNHANDLEABLE
from impls.current.state import KVM_REQ_EVENT, KVM_REQ_TRIPLE_FAULT, TREE

SMM_C = "arch/x86/kvm/smm.c"
EMULATE_C = "arch/x86/kvm/emulate.c"


class Smm618:
    """arch/x86/kvm/smm.c of 6.18, as methods of the vCPU."""

    @origin(SMM_C, "process_smi", tree=TREE)
    def process_smi(vcpu) -> None:
        vcpu.arch.smi_pending = True
        vcpu.kvm_make_request(KVM_REQ_EVENT)

    @origin(SMM_C, "kvm_smm_changed", tree=TREE)
    def kvm_smm_changed(vcpu, entering_smm: bool) -> None:
        """Set or clear HF_SMM_MASK (leaving also clears
        HF_SMM_INSIDE_NMI_MASK and makes KVM_REQ_EVENT for a latched INIT or
        SMI)."""
        if entering_smm:
            vcpu.arch.hflags |= HF_SMM_MASK
        else:
            vcpu.arch.hflags &= ~(HF_SMM_MASK | HF_SMM_INSIDE_NMI_MASK)
            vcpu.kvm_make_request(KVM_REQ_EVENT)

    @origin(SMM_C, "enter_smm_save_state_64", tree=TREE)
    def enter_smm_save_state_64(vcpu) -> dict:
        """RFLAGS (IF, TF) and, new in 6.2, the interrupt shadow
        (kvm_x86_ops.get_interrupt_shadow) of the level running."""
        lv = vcpu.guest()
        return {"rflags_if": lv.rflags_if, "rflags_tf": lv.tf,
                "int_shadow": vcpu.kvm_x86_ops.get_interrupt_shadow(vcpu)}

    @origin(SMM_C, "enter_smm", tree=TREE)
    def enter_smm(vcpu) -> None:
        """Save the state into SMRAM, let the vendor leave guest mode, set
        HF_SMM_MASK, write SMRAM, mask NMIs (remembering in
        HF_SMM_INSIDE_NMI_MASK that they already were), IF=0, RIP at the
        handler and no interrupt shadow.  The handler executes RSM at once
        (impls.hw.environment), so the port records `SmiHandled` here, with
        the level that was running.  A vendor failure kills the VM
        (kvm_vm_dead): neither vendor fails here."""
        ops = vcpu.kvm_x86_ops
        level = 2 if vcpu.is_guest_mode() else 1
        vcpu.rec.note(f"enter_smm: SMI taken in L{level}")
        vcpu.rec.observe(1, SmiHandled(level))
        smram = vcpu.enter_smm_save_state_64()
        ops.enter_smm(vcpu, smram)
        vcpu.kvm_smm_changed(True)
        vcpu.cpu.smram = smram  # kvm_vcpu_write_guest(smbase + 0xfe00)
        if ops.get_nmi_mask(vcpu):
            vcpu.arch.hflags |= HF_SMM_INSIDE_NMI_MASK
        else:
            ops.set_nmi_mask(vcpu, True)
        lv = vcpu.guest()
        lv.rflags_if = lv.tf = False  # kvm_set_rflags(X86_EFLAGS_FIXED)
        vcpu.kvm_make_request(KVM_REQ_EVENT)
        vcpu.cpu.smm_handler = True  # kvm_rip_write(0x8000)
        ops.set_interrupt_shadow(vcpu, 0)

    @origin(SMM_C, "rsm_load_state_64", tree=TREE)
    def rsm_load_state_64(vcpu, ctxt, smstate: dict) -> int:
        """RFLAGS into the emulator's context; the vCPU's interrupt shadow
        cleared and the saved one handed to the emulator (the writeback of
        x86_emulate_instruction restores it)."""
        ctxt.eflags_if = smstate["rflags_if"]
        ctxt.eflags_tf = smstate["rflags_tf"]
        vcpu.kvm_x86_ops.set_interrupt_shadow(vcpu, 0)
        ctxt.interruptibility = smstate["int_shadow"] & 0xFF
        return X86EMUL_CONTINUE

    @origin(SMM_C, "emulator_leave_smm", tree=TREE)
    def emulator_leave_smm(vcpu, ctxt) -> int:
        """Read SMRAM, unmask NMIs unless SMM was entered with them masked,
        leave SMM, let the vendor re-enter guest mode, load the saved
        state.  (Back to real mode before loading CR0/CR3/CR4/EFER: not
        modelled.)"""
        smram = vcpu.cpu.smram  # kvm_vcpu_read_guest(smbase + 0xfe00)
        if not vcpu.arch.hflags & HF_SMM_INSIDE_NMI_MASK:
            vcpu.kvm_x86_ops.set_nmi_mask(vcpu, False)
        vcpu.kvm_smm_changed(False)
        if vcpu.kvm_x86_ops.leave_smm(vcpu, smram):
            return X86EMUL_UNHANDLEABLE
        return vcpu.rsm_load_state_64(ctxt, smram)

    @origin(EMULATE_C, "em_rsm", tree=TREE)
    def em_rsm(vcpu, ctxt) -> int:
        """Outside SMM: #UD.  Else leave SMM; a failure is a triple fault
        (emulator_triple_fault)."""
        if not vcpu.is_smm():
            return X86EMUL_PROPAGATE_FAULT  # emulate_ud
        if vcpu.emulator_leave_smm(ctxt):
            vcpu.kvm_make_request(KVM_REQ_TRIPLE_FAULT)
        return X86EMUL_CONTINUE  # emulator_recalc_and_set_mode
