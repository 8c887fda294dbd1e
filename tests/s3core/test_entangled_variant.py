"""The 'entangled' synthetic variant (issue 20.4): the steps outside the event carry content from
the relevant map itself, fresh at every step, so no projection of the features removes them."""
import numpy as np
import pytest

from s3core.data.base import DataError
from s3core.data.synthetic import SyntheticConfig, make_synthetic

SMALL = dict(n_train=200, n_valid=50, n_test=50, dims=(12, 20))


def test_distractor_steps_live_in_the_relevant_subspace_and_vary_over_time():
    b = make_synthetic(SyntheticConfig(variant="entangled", noise=0.0, **SMALL))
    x, event = b["train"].features["x2"], b.meta["event_mask"]["train"]["x2"]
    assert event.sum(1).tolist() == [10] * 200                      # one 10-step event per sample
    inside = x[event].reshape(200, 10, 20)
    assert np.allclose(inside, inside[:, :1])                       # the event repeats r_m
    outside = x[~event].reshape(200, 40, 20)
    assert outside.std(1).mean() > 0.3                               # the distractors change every step
    # with noise 0 every step is tanh(A_m f) for some f: atanh of it lies in the 8-dim row space of A_m
    basis = np.linalg.svd(np.arctanh(np.clip(inside[:, 0], -0.999999, 0.999999)), full_matrices=False)[2][:8]
    steps = np.arctanh(np.clip(outside.reshape(-1, 20), -0.999999, 0.999999))
    resid = steps - steps @ basis.T @ basis
    assert np.abs(resid).max() < 1e-3 * np.abs(steps).max()


def test_other_variants_are_unchanged_and_base_refuses_distractors():
    a = make_synthetic(SyntheticConfig(variant="localized", **SMALL))
    b = make_synthetic(SyntheticConfig(variant="localized", distractor_scale=0.0, **SMALL))
    assert np.array_equal(a["test"].features["x1"], b["test"].features["x1"])
    with pytest.raises(DataError, match="apply to the variants"):
        make_synthetic(SyntheticConfig(distractor_scale=1.0))
    with pytest.raises(DataError, match="distractor_scale"):
        make_synthetic(SyntheticConfig(variant="entangled", distractor_scale=-1.0, **SMALL))
