"""Speed work on the engine must not change results: small simulations (see :mod:`tests.engine_golden`) give
bit-identical outputs to the ones pinned from the code before it (``tests/data/engine_golden.json``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.engine_golden import GOLDEN_PATH, compute

GOLDEN = json.loads(GOLDEN_PATH.read_text())


@pytest.mark.parametrize("scenario", sorted(GOLDEN))
def test_simulation_outputs_are_bit_identical_to_the_pinned_ones(scenario):
    got = compute([scenario])[scenario]
    changed = sorted(k for k in GOLDEN[scenario] if got.get(k) != GOLDEN[scenario][k])
    assert not changed, f"{scenario}: outputs changed: {changed}"
    assert set(got) == set(GOLDEN[scenario])


def test_digests_ignore_last_bit_noise_and_see_real_changes():
    """Another CPU's vector maths moves results by an ulp (and a difference of two times by the ulps of the times):
    the digest stays; a change of 1e-7 of the array's largest value in one value changes it."""
    from tests.engine_golden import _array_digest, _json_digest

    rng = np.random.default_rng(0)
    times = np.sort(rng.uniform(0, 700, 5000))
    queue = times[1:] - times[:-1]  # small differences of large times
    for base in (times, queue, rng.lognormal(0, 3, 5000)):
        noisy = np.where(rng.random(base.size) < 0.5, np.nextafter(base, rng.choice([-np.inf, np.inf], base.size)),
                         base)
        assert _array_digest(noisy) == _array_digest(base)
        moved = base.copy()
        moved[123] += 1e-7 * base.max()
        assert _array_digest(moved) != _array_digest(base)
    report = {"mfu": 0.21509338380091073, "flops": 4228378548934719.0, "absent": 0.0, "name": "decode"}
    assert _json_digest(report | {"mfu": 0.21509338380091048, "absent": -3.26e-322}) == _json_digest(report)
    assert _json_digest(report | {"mfu": 0.2150934}) != _json_digest(report)
