"""Speed work on the engine must not change results: small simulations (see :mod:`tests.engine_golden`) give
bit-identical outputs to the ones pinned from the code before it (``tests/data/engine_golden.json``)."""

from __future__ import annotations

import json

import pytest

from tests.engine_golden import GOLDEN_PATH, compute

GOLDEN = json.loads(GOLDEN_PATH.read_text())


@pytest.mark.parametrize("scenario", sorted(GOLDEN))
def test_simulation_outputs_are_bit_identical_to_the_pinned_ones(scenario):
    got = compute([scenario])[scenario]
    changed = sorted(k for k in GOLDEN[scenario] if got.get(k) != GOLDEN[scenario][k])
    assert not changed, f"{scenario}: outputs changed: {changed}"
    assert set(got) == set(GOLDEN[scenario])
