"""The current-release port: KVM's event injection as of Linux 6.18.

It is the 6.1 port (`impls.upstream`) with every event-path function 6.18
changed overridden, as the 6.1 port is the 5.11 port with 6.1's changes:
`vcpu.Vcpu` subclasses the 6.1 vCPU with the mixins `x86` (x86.c, x86.h),
`smm` (smm.c, new in 6.2, and em_rsm), `vmx` / `vmx_nested` (vmx/vmx.c,
vmx/nested.c), `svm` / `svm_nested` (svm/svm.c, svm/nested.c), on the
state of `state`.  Each module's docstring lists what 6.18 changed in its
file and which 6.1 functions are reused unchanged; every function ported
here names its 6.18 origin (`tree="6.18"`), and every function the port
still runs from the 6.1 port, or from the 5.11 port through it, is listed
with where its 6.18 version was read in `reused` (checked by
tests/test_fidelity.py).  docs/kernel/current.md walks through the
6.1 -> 6.18 diff function by function.  The scenario driver is the 6.1
port's (`impls.upstream.driver`).

What a guest sees differently from 6.1, in brief: the interrupt shadow
survives an SMI (SMRAM holds it, 6.2); an exception pending from
protected mode loses its error code when delivered in real mode
(6c41468c7c12); a triple fault in L2 that L1 does not intercept shuts
the VM down on SVM; KVM_GET/SET_VCPU_EVENTS keep a second pending NMI;
after a nested VM exit a pending interrupt or NMI is evaluated for L1 at
once (VMX); an interrupt window for L1 while L2 runs exits on SVM.

Source: the v6.18 release as imported in the stored repository
`clywm520/6.18.y`, commit 947ac181c5b8c74cfafa0470b3b99e4a0ffa38fa
("OK", Makefile VERSION 6, PATCHLEVEL 18, SUBLEVEL 0, EXTRAVERSION empty;
its next commit updates to 6.18.1).  No copy of the v6.18 tag itself is
stored.  The 6.1 side of every comparison is the 6.1.55 stable tree
(`mjsmar/snpport-6.1.55`, its initial import f91cf3e9) plus the
differences between v6.1 and the 6.1 port that SOURCES.md lists.

Simplifications are those of `impls.hw.environment`; AMD vNMI is off
(`state.VNMI_ENABLED`).
"""
from __future__ import annotations

from impls.current.reused import REUSED_FROM_61, REUSED_FROM_511
from impls.current.vcpu import Vcpu
from impls.upstream import Upstream
from impls.upstream.driver import Driver


class Current(Upstream):
    name = "current"
    origin = "Linux 6.18 (v6.18 as imported in clywm520/6.18.y 947ac181)"
    summary = "port of KVM's event injection as of Linux 6.18, the 6.1 port with 6.18's changes"

    vcpu_class = Vcpu
    driver_class = Driver

    kernel_tree = "6.18"
    #: The 6.1 port's functions, and the 5.11 ones it reused, that 6.18 has
    #: unchanged for what the port models.
    takes_over = {"6.1": REUSED_FROM_61, "5.11-rc7": REUSED_FROM_511}
