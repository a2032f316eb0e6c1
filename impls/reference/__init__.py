"""The reference: the architecture as the Intel SDM and AMD APM describe it.

`model.Machine` is the model; `Reference.run` explores every choice the
manuals leave open and returns all the outcomes they allow.
"""
from __future__ import annotations

from impls.api import Allowed, Implementation, Outcome
from impls.reference.model import Livelock, Machine

#: At most this many runs per scenario when exploring choices; past it the
#: rest of the choice tree is not explored, and the answer says "too many
#: choices" (`Allowed.complete` is False).
MAX_RUNS = 64


class Reference(Implementation):
    name = "reference"
    origin = "Intel SDM vol. 3 (325384-059US); AMD APM vol. 2 (24593 rev. 3.44)"
    summary = "architectural model written from the manuals"

    def run(self, scenario) -> Outcome | Allowed:
        """Depth-first over the choice tree.  A run answers the choices it
        is given and 0 to every later one; each later choice point it meets
        is a branch still to explore, kept as (the run's answers, zeros
        after them, the other answer): constant size, so what is left to
        explore grows linearly with the choice points met, and only the
        `MAX_RUNS` branches that can still be run are kept."""
        outcomes: list[Outcome] = []
        rules: set[str] = set()
        todo: list[tuple[list[int], int, int]] = [([], 0, -1)]
        dropped = runs = 0
        while todo and runs < MAX_RUNS:
            base, zeros, alt = todo.pop()
            answers = base + [0] * zeros + ([alt] if alt >= 0 else [])
            runs += 1
            m = Machine(scenario, answers)
            try:
                m.run_events()
                out = m.outcome()
            except Livelock as e:
                out = m.outcome(str(e))
            if out not in outcomes:
                outcomes.append(out)
            # Branch on every choice point met beyond the answers given.
            for i in range(len(answers), len(m.asked)):
                rule, options = m.asked[i]
                rules.add(rule)
                todo += [(answers, i - len(answers), a) for a in range(1, options)]
            room = MAX_RUNS - runs  # branches deeper in the stack would never be run
            if len(todo) > room:
                dropped += len(todo) - room
                del todo[:len(todo) - room]
        if todo or dropped:
            rules.add(f"too many choices: {runs} runs explored, {len(todo) + dropped} branches not")
            return Allowed(tuple(outcomes), tuple(sorted(rules)), complete=False)
        if len(outcomes) == 1:
            return outcomes[0]
        return Allowed(tuple(outcomes), tuple(sorted(rules)))
