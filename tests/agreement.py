"""Whether a port agrees with the reference on a scenario, as the oracle
judges it (allowed outcomes, Undefined parts, undefined_from): one
definition for every port's tests."""
from fuzz.oracle import compare


def agrees(name: str, scenario) -> bool:
    return compare(scenario, ["reference", name]).agree
