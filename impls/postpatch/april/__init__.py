"""The April 2021 repost of the RFC ("KVM: nSVM/nVMX: fix nested
virtualization treatment of nested exceptions", Levitsky, 2021-04-01, four
patches; lkml-likexu/kde 2fa1f2f4), as a further subclass of the February
port: `postpatch-v2`.

It is registered because its differences change outcomes
(docs/kernel/rfc.md Part 2):

* KVM_SET_VCPU_EVENTS clears both exception slots and never sets the named
  one valid: an exception set by userspace (or carried by a migration) is
  dropped,
* a second pending exception overwrites the first (February refuses the
  second),
* vmx_inject_page_fault_nested is gone, so with EPT off an L2 #PF that L1
  intercepts goes through the new delivery path (and its merge with an
  in-flight exception) instead of exiting at once,
* the pending exception is delivered after every exit handler, so
  userspace never sees both exceptions, and the new uapi / cap are dropped.

The repost was cut against a later tree (5.12-rc, which reflects a triple
fault in L2 to L1 through nested_ops->triple_fault and has
svm_inject_page_fault_nested).  Those base differences are *not* modelled:
the port applies the repost's final functions to the same base as
`postpatch`, so that postpatch vs postpatch-v2 shows what the repost
changed, and nothing else.  The February patch 2/4 (async_page_fault) is
not part of the repost and has no effect here either (see
`impls.postpatch.paging_tmpl`).

Modules: `state`, `x86`, `svm_nested`, `vmx_nested`, `vcpu`.
"""
from __future__ import annotations

from impls.postpatch import Postpatch
from impls.postpatch.april.vcpu import Vcpu
from impls.prepatch.driver import Driver


class PostpatchV2(Postpatch):
    name = "postpatch-v2"
    origin = "RFC repost 2021-04-01 (Levitsky, 4 patches: lkml-likexu/kde 2fa1f2f4) on the prepatch port"
    summary = "the April 2021 repost of the RFC, on the same base as postpatch"

    vcpu_class = Vcpu
    driver_class = Driver  # no new uapi: the pre-patch VMM

    #: The repost's final functions over the February port: whatever the
    #: repost leaves alone is February's, or the base's.
    kernel_tree = "RFC repost 2021-04-01"
    takes_over = {"5.11-rc7": None, "RFC 2021-02-25 v1": None}
