"""The reference: the architecture as the Intel SDM and AMD APM describe it.

`model.Machine` is the model; `Reference.run` explores every choice the
manuals leave open and returns all the outcomes they allow.
"""
from __future__ import annotations

from impls.api import Allowed, Implementation, Outcome
from impls.reference.model import Livelock, Machine

#: At most this many runs per scenario when exploring choices; the rest of
#: the choice tree is not explored (and `Allowed.choices` says so).
MAX_RUNS = 64


class Reference(Implementation):
    name = "reference"
    origin = "Intel SDM vol. 3 (325384-059US); AMD APM vol. 2 (24593 rev. 3.44)"
    summary = "architectural model written from the manuals"

    def run(self, scenario) -> Outcome | Allowed:
        outcomes: list[Outcome] = []
        rules: set[str] = set()
        todo: list[list[int]] = [[]]
        runs = 0
        while todo and runs < MAX_RUNS:
            answers = todo.pop()
            runs += 1
            m = Machine(scenario, answers)
            try:
                m.run_events()
                out = m.outcome()
            except Livelock as e:
                out = m.outcome(str(e))
            if out not in outcomes:
                outcomes.append(out)
            # Fork on every choice point met beyond the answers given.
            for i in range(len(answers), len(m.asked)):
                rule, options = m.asked[i]
                rules.add(rule)
                taken = [a for a in answers] + [0] * (i - len(answers))
                for alt in range(1, options):
                    todo.append(taken + [alt])
        if todo:
            rules.add(f"(choice tree cut after {MAX_RUNS} runs)")
        if len(outcomes) == 1:
            return outcomes[0]
        return Allowed(tuple(outcomes), tuple(sorted(rules)))
