"""Every case in corpus/regressions/ still gets the verdicts recorded in it.

On a mismatch the failure shows what changed and the side-by-side explain
output of the case.
"""
from pathlib import Path

import pytest

from fuzz.explain import explain
from fuzz.export import REGRESSIONS, check

CASES = sorted(REGRESSIONS.glob("*.txt"))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_regression_case(path: Path):
    problems, report = check(path)
    if problems:
        pytest.fail("\n".join(problems) + "\n\n" + explain(report), pytrace=False)
