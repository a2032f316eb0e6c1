"""Record-aware mutations for libFuzzer (atheris's custom mutator).

libFuzzer mutates bytes: its dictionary insertions land at any offset, so a
whole event record from the dictionary rarely lines up with a record
boundary, and a scenario that needs three particular events (an intercept,
an unusable stack, an entry with an injected event) is found slowly.  About
half of the time (9 in 16) this mutator works on records instead: it
inserts a record of the language (`seeds.language_records`, never the
seeds) at a record boundary, replaces, deletes, duplicates or swaps
records, sets one parameter of one record (to the value a language record
of that kind has there, or, one time in four, to random bytes: an input
that reached the right situation with the wrong injected event is one
parameter away from the bug), inserts the nested prologue (an
`l1.intercept` record, half of the time a record of what L2's delivery
meets -- its IDT, its handler stack, a delivery fault -- then an
`l1.vmentry` one: every nested scenario starts so, and seed class A needs
all three), starts afresh (2 times in 16) from a prologue alone that always
sets up what the delivery meets, under a random header, or changes the
header byte; otherwise it defers to libFuzzer's own byte mutations.

The fresh start keeps a floor under the chance of building a short nested
scenario: a campaign whose corpus has drifted to long inputs, or to inputs
whose configuration or earlier events hide the situation, otherwise
rarely gets back to one (time to first finding was bimodal: found within
~30 s or not in 300 s).  Measured in-process on 20,000 fresh starts (half
of them with the setup record), seed class A was 1 in 5,000, C 1 in 900,
DF 1 in 500; libFuzzer gives the custom mutator about half of its
mutations (the other half is the cross-over below) and chains several, so
at ~800 execs/s class A's floor was, by estimate, ~150 s of a campaign,
in line with the 1 run in 10 that missed it in 300 s; with the setup
always there and twice the share the estimate is ~40 s.
Every result is a valid input (decoding is total) no longer than max_size.

`crossover` is libFuzzer's cross-over at record boundaries: the header and
a run of records of one input, then a run of records of the other, so that
an intercept found by one input and an entry with an injected event found
by another meet in one scenario; libFuzzer's byte-level cross-over cuts
records in half.
"""
from __future__ import annotations

import random
from collections.abc import Callable

from fuzz import binary, seeds

RECORDS = seeds.language_records()
_R = binary.RECORD
#: The records of the nested prologue: L1 sets its intercepts, then enters L2.
_KIND = {s.kind: i for i, s in enumerate(binary.SPECS)}
INTERCEPTS = [r for r in RECORDS if r[0] == _KIND["l1.intercept"]]
ENTRIES = [r for r in RECORDS if r[0] == _KIND["l1.vmentry"]]
#: What L2's delivery of the entry's event meets: L2's IDT, its handler stack,
#: a fault armed for the next delivery (the records of `l2.idt`,
#: `l2.idt_limit`, `l2.stack`, `delivery_fault`).
L2_SETUP = [r for r in RECORDS if r[0] in {_KIND[k] for k in ("l2.idt", "l2.idt_limit", "l2.stack",
                                                                  "delivery_fault")}]
#: By kind index: the language's records of that kind; where each of its
#: parameters lies in a record is `binary.FIELDS`.
BY_KIND = {k: [r for r in RECORDS if r[0] == k] for k in range(len(binary.SPECS))}
FIELDS = binary.FIELDS


def _split(data: bytes) -> tuple[bytes, list[bytes]]:
    body = data[1:]
    return (data[:1] or b"\0"), [body[i : i + _R].ljust(_R, b"\0") for i in range(0, len(body), _R)]


def mutate(data: bytes, max_size: int, seed: int, fallback: Callable[[bytes, int], bytes]) -> bytes:
    rng = random.Random(seed)
    op = rng.randrange(16)
    if op < 7:
        return fallback(data, max_size)
    head, recs = _split(data)
    room = max(0, min(binary.MAX_EVENTS, (max_size - 1) // _R))
    if op in (13, 15):  # afresh (2 in 16): a random header, then intercepts, L2's setup, VM entry
        if room < 3:
            return fallback(data, max_size)
        head = bytes([rng.randrange(1 << 5)])
        recs = [rng.choice(INTERCEPTS), rng.choice(L2_SETUP), rng.choice(ENTRIES)]
        return head + b"".join(recs)
    if op == 6 and len(recs) < room:  # insert a record of the language
        recs.insert(rng.randint(0, len(recs)), rng.choice(RECORDS))
    elif op == 7 and recs:  # replace one
        recs[rng.randrange(len(recs))] = rng.choice(RECORDS)
    elif op == 8 and recs:  # delete one
        del recs[rng.randrange(len(recs))]
    elif op == 9 and recs and len(recs) < room:  # duplicate one elsewhere
        recs.insert(rng.randint(0, len(recs)), recs[rng.randrange(len(recs))])
    elif op == 10 and len(recs) > 1:  # swap two
        i, j = rng.sample(range(len(recs)), 2)
        recs[i], recs[j] = recs[j], recs[i]
    elif op == 11 and len(recs) + 1 < room:  # the nested prologue: intercepts, then VM entry
        i = rng.randint(0, len(recs))
        prologue = [rng.choice(INTERCEPTS), rng.choice(ENTRIES)]
        if rng.random() < 0.5 and len(recs) + 2 < room:  # and what the entry's delivery meets
            prologue.insert(1, rng.choice(L2_SETUP))
        recs[i:i] = prologue
    elif op == 14 and recs:  # one parameter of one record
        i = rng.randrange(len(recs))
        rec = recs[i]
        kind = rec[0] % len(FIELDS)
        if FIELDS[kind]:
            off, width = rng.choice(FIELDS[kind])
            value = rng.randbytes(width) if rng.random() < 0.25 else rng.choice(BY_KIND[kind])[off:off + width]
            recs[i] = rec[:off] + value + rec[off + width:]
    else:  # another configuration: vendor, nested paging, caps
        head = bytes([head[0] ^ (1 << rng.randrange(5))])
    return (head + b"".join(recs[:room]))[:max_size]


def crossover(data1: bytes, data2: bytes, max_size: int, seed: int) -> bytes:
    """Records [:i] of `data1`, then records [j:k] of `data2` (its header
    kept), no longer than max_size."""
    rng = random.Random(seed)
    head, recs1 = _split(data1)
    _, recs2 = _split(data2)
    room = max(0, min(binary.MAX_EVENTS, (max_size - 1) // _R))
    i = rng.randint(0, len(recs1))
    j = rng.randint(0, len(recs2))
    k = rng.randint(j, len(recs2))
    return (head + b"".join((recs1[:i] + recs2[j:k])[:room]))[:max_size]
