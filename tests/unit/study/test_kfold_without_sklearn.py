"""The folds genedml draws while Snakemake plans are scikit-learn's KFold folds, without importing it."""

import numpy as np
import pytest

from genedml.study.folds import kfold_test_indices


@pytest.mark.parametrize("n", [2, 7, 8, 23, 100])
@pytest.mark.parametrize("n_folds", [2, 3, 8])
@pytest.mark.parametrize("seed", [None, 0, 42])
def test_same_folds_as_scikit_learn(n, n_folds, seed):
    from sklearn.model_selection import KFold

    if n_folds > n:
        pytest.skip("more folds than items")
    items = np.arange(n)
    expected = [test for _, test in KFold(n_folds, shuffle=seed is not None, random_state=seed).split(items)]
    got = kfold_test_indices(n, n_folds, seed)
    assert len(got) == n_folds
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_every_item_is_tested_once():
    got = np.concatenate(kfold_test_indices(1229, 8, 3))
    assert sorted(got.tolist()) == list(range(1229))
