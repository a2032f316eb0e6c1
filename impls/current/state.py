"""KVM's state as of Linux 6.18, where it differs from the 6.1 structures of
`impls.upstream.state` (which this module re-exports for everything else).
Read in arch/x86/include/asm/kvm_host.h, asm/svm.h and svm/svm.h at the
v6.18 release (clywm520/6.18.y 947ac181).

For the event paths the structures are those of 6.1.  What 6.18 added or
renamed, and how the port treats it:

* AMD vNMI (6.4): V_NMI_ENABLE / V_NMI_PENDING / V_NMI_BLOCKING in the
  VMCB's int_ctl and the `vnmi` module parameter.  The port runs with vNMI
  off (`VNMI_ENABLED`), as on a host without the feature: every vNMI
  branch of the ported functions takes its "off" side.
* struct vcpu_svm's `nmi_masked` and `awaiting_iret_completion` (6.4)
  replace the hflags bits HF_NMI_MASK and HF_IRET_MASK with the same
  meaning; `guest_gif` replaces HF_GIF_MASK while vGIF is off.  The port
  keeps the hflags bits (the shared driver copies them on migration), so
  the functions that only renamed them are not ported.
* KVM_RUN_FORCE_IMMEDIATE_EXIT (6.10), passed to the vendor's vcpu_run,
  replaces the request_immediate_exit hook: the port keeps the hook, which
  has the same effect on the simulated CPU.

Only the fields the event paths use are here.  Names are KVM's.
"""
from __future__ import annotations

from impls.upstream.state import *  # noqa: F401,F403 -- the unchanged 6.1 names

TREE = "6.18"

#: Where 6.18 was read: the v6.18 release as imported there (its Makefile
#: says 6.18.0; the next commit moves to 6.18.1).
RELEASE = "clywm520/6.18.y 947ac181 (v6.18)"

#: The `vnmi` module parameter of kvm_amd: off (see the module docstring).
VNMI_ENABLED = False

#: vNMI bits of the VMCB's int_ctl (asm/svm.h, 6.4).
V_NMI_PENDING_MASK = 1 << 11
V_NMI_BLOCKING_MASK = 1 << 12
V_NMI_ENABLE_MASK = 1 << 26
