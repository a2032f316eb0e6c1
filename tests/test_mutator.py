"""The record-aware custom mutator: valid, bounded, and record-aligned."""
from hypothesis import given, settings, strategies as st

from fuzz import binary, mutator
from fuzz.binary import RECORD, decode


def no_fallback(data, max_size):
    raise AssertionError("fallback not expected")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=RECORD * 8), st.integers(1, RECORD * 10), st.integers(0, 2**32 - 1))
def test_result_fits_and_decodes(data, max_size, seed):
    out = mutator.mutate(data, max_size, seed, lambda d, m: d[:m])
    assert len(out) <= max_size
    decode(out)  # total: never raises


def test_record_operations_keep_record_boundaries():
    data = binary.encode(decode(bytes([0]) + mutator.RECORDS[0] + mutator.RECORDS[1]))
    seen_ops = set()
    for seed in range(400):
        out = mutator.mutate(data, 4096, seed, lambda d, m: b"fallback")
        if out == b"fallback":
            continue
        assert (len(out) - 1) % RECORD == 0
        before, after = decode(data), decode(out)
        seen_ops.add(len(after.events) - len(before.events))
        # Every record of the result is a record of the input or of the language.
        body = out[1:]
        for i in range(0, len(body), RECORD):
            assert body[i:i + RECORD] in set(mutator.RECORDS) | {data[1:1 + RECORD], data[1 + RECORD:]}
    assert seen_ops == {-1, 0, 1, 2, 3}  # delete; replace, swap, header; insert, duplicate; the prologue


def test_inserted_records_come_from_the_language_not_the_seeds():
    from fuzz import seeds

    assert mutator.RECORDS == seeds.language_records()
    assert all(len(r) == RECORD for r in mutator.RECORDS)
    assert len({decode(b"\0" + r).events[0].kind for r in mutator.RECORDS}) == len(binary.SPECS)


def test_crossover_joins_records_of_both_parents_at_record_boundaries():
    a = bytes([3]) + b"".join(mutator.RECORDS[0:3])
    b = bytes([0]) + b"".join(mutator.RECORDS[10:14])
    joined = set()
    for seed in range(300):
        out = mutator.crossover(a, b, 4096, seed)
        assert out[0] == 3 and (len(out) - 1) % RECORD == 0  # the first parent's header, whole records
        recs = [out[i:i + RECORD] for i in range(1, len(out), RECORD)]
        ka = [r for r in recs if r in mutator.RECORDS[0:3]]
        kb = [r for r in recs if r in mutator.RECORDS[10:14]]
        assert ka + kb == recs and ka == list(mutator.RECORDS[0:len(ka)])  # a prefix of a, then a run of b
        if ka and kb:
            joined.add((len(ka), len(kb)))
    assert len(joined) > 4
    assert len(mutator.crossover(a, b, 1 + RECORD, 7)) <= 1 + RECORD


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=RECORD * 6), st.binary(max_size=RECORD * 6), st.integers(1, RECORD * 10),
       st.integers(0, 2**32 - 1))
def test_crossover_fits_and_decodes(a, b, max_size, seed):
    out = mutator.crossover(a, b, max_size, seed)
    assert len(out) <= max_size
    decode(out)


def test_prologue_inserts_intercepts_then_a_vm_entry():
    data = bytes([0]) + mutator.RECORDS[0]
    grown = [decode(out) for seed in range(400)
             if len(out := mutator.mutate(data, 4096, seed, lambda d, m: d)) == len(data) + 2 * RECORD]
    assert grown
    for s in grown:
        kinds = s.kinds()
        i = kinds.index("l1.intercept")
        assert kinds[i + 1] == "l1.vmentry" and len(kinds) == 3


def test_prologue_sometimes_sets_up_what_the_entry_delivery_meets():
    """Half of the prologues put a record of L2's IDT, handler stack or an
    armed delivery fault between the intercepts and the entry (seed class A
    needs all three)."""
    data = bytes([0]) + mutator.RECORDS[0]
    grown = [decode(out) for seed in range(600)
             if len(out := mutator.mutate(data, 4096, seed, lambda d, m: d)) == len(data) + 3 * RECORD]
    assert grown
    setups = set()
    for s in grown:
        kinds = s.kinds()
        i = kinds.index("l1.intercept")
        assert kinds[i + 2] == "l1.vmentry" and len(kinds) == 4
        setups.add(kinds[i + 1])
    assert setups <= {"l2.idt", "l2.idt_limit", "l2.stack", "delivery_fault"} and "l2.stack" in setups
