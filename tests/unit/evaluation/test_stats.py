"""The comparison statistics against answers derived by hand or by enumeration (docs/statistics.md)."""

import itertools

import numpy as np
import pytest

from genedml.evaluation.stats import (
    bootstrap_replicates,
    holm,
    paired_patient_bootstrap,
    patient_bootstrap,
    seed_spread,
    wilcoxon_paired,
)


def test_bootstrap_collapses_when_every_patient_has_the_same_value():
    values = [0.25, 0.25, 0.25, 0.25, 0.25]
    patients = ["P1", "P1", "P2", "P3", "P3"]
    res = patient_bootstrap(values, patients, n_boot=500, level=0.95, seed=3)
    assert (res["estimate"], res["ci_low"], res["ci_high"]) == (0.25, 0.25, 0.25)
    assert (res["n_patients"], res["n_sections"], res["n_boot"]) == (3, 5, 500)


def test_two_patients_weight_sections_and_match_the_enumerated_distribution():
    # patient A brings two sections (0, 1), patient B one (3). The four equally likely ordered draws:
    # AA -> (0+1+0+1)/4 = 0.5; AB, BA -> (0+1+3)/3 = 4/3; BB -> 3. So P = 1/4, 1/2, 1/4.
    values, patients = [0.0, 1.0, 3.0], ["A", "A", "B"]
    res = patient_bootstrap(values, patients, n_boot=4000, level=0.95, seed=7)
    assert res["estimate"] == pytest.approx(4 / 3)  # section-weighted, not the mean of patient means (1.75)
    # the 2.5 % and 97.5 % points of {0.5: 1/4, 4/3: 1/2, 3: 1/4} are the two extreme atoms
    assert res["ci_low"] == pytest.approx(0.5) and res["ci_high"] == pytest.approx(3.0)
    # a 40 % interval (30th to 70th percentile) lies inside the middle atom's mass (0.25 .. 0.75)
    mid = patient_bootstrap(values, patients, n_boot=4000, level=0.4, seed=7)
    assert mid["ci_low"] == pytest.approx(4 / 3) and mid["ci_high"] == pytest.approx(4 / 3)
    reps = bootstrap_replicates(values, patients, n_boot=4000, seed=7)
    freq = {v: np.mean(np.isclose(reps, v)) for v in (0.5, 4 / 3, 3.0)}
    assert sum(freq.values()) == pytest.approx(1.0)
    for v, p in zip((0.5, 4 / 3, 3.0), (0.25, 0.5, 0.25)):
        assert abs(freq[v] - p) < 0.03  # 4 sd of a binomial frequency at n = 4000


def test_three_patients_distribution_matches_enumeration():
    values = [1.0, 2.0, 4.0, 8.0]
    patients = ["a", "b", "b", "c"]
    sections = {"a": [1.0], "b": [2.0, 4.0], "c": [8.0]}
    exact = {}
    for draw in itertools.product("abc", repeat=3):
        vals = [v for p in draw for v in sections[p]]
        key = round(sum(vals) / len(vals), 12)
        exact[key] = exact.get(key, 0) + 1 / 27
    reps = np.round(bootstrap_replicates(values, patients, n_boot=20000, seed=1), 12)
    assert set(np.unique(reps)) <= set(exact)
    for v, p in exact.items():
        assert abs(np.mean(reps == v) - p) < 4 * np.sqrt(p * (1 - p) / 20000) + 1e-9
    # the same seed gives the same interval
    assert patient_bootstrap(values, patients, seed=5) == patient_bootstrap(values, patients, seed=5)


def test_nan_sections_are_left_out_not_zero():
    res = patient_bootstrap([0.5, np.nan, 0.5], ["A", "A", "B"], n_boot=100)
    assert res["estimate"] == 0.5 and res["n_sections"] == 2 and res["n_sections_total"] == 3
    assert "left out" in res["note"]
    none = patient_bootstrap([np.nan, np.nan], ["A", "B"], n_boot=100)
    assert np.isnan(none["estimate"]) and np.isnan(none["ci_low"]) and none["n_boot"] == 0
    assert none["n_patients"] == 0 and "no section has a value" in none["note"]


def test_paired_bootstrap_of_identical_heads_is_zero_width_at_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=12)
    patients = np.repeat(["P1", "P2", "P3", "P4"], 3)
    res = paired_patient_bootstrap(a, a.copy(), patients, n_boot=300)
    assert (res["estimate"], res["ci_low"], res["ci_high"]) == (0.0, 0.0, 0.0)
    shifted = paired_patient_bootstrap(a + 0.1, a, patients, n_boot=300)
    assert shifted["estimate"] == pytest.approx(0.1)
    assert shifted["ci_low"] == pytest.approx(0.1) and shifted["ci_high"] == pytest.approx(0.1)


def test_paired_bootstrap_resamples_the_same_patients_for_both():
    # a - b differs by patient; the paired interval is the interval of the per-section differences
    a = np.array([1.0, 2.0, 3.0, 4.0])
    b = np.array([0.0, 0.0, 1.0, 1.0])
    patients = ["A", "A", "B", "B"]
    paired = paired_patient_bootstrap(a, b, patients, n_boot=1000, seed=2)
    direct = patient_bootstrap(a - b, patients, n_boot=1000, seed=2)
    assert paired == direct
    assert paired["estimate"] == pytest.approx(2.0)
    assert paired["ci_low"] == pytest.approx(1.5) and paired["ci_high"] == pytest.approx(2.5)  # AA, BB


def test_wilcoxon_hand_case_against_enumeration():
    d = [1.0, 2.0, 3.0, -4.0, 5.0]
    res = wilcoxon_paired(d)
    # ranks of |d| are 1..5; R+ = 1+2+3+5 = 11, R- = 4, W = min = 4
    assert (res["rank_sum_pos"], res["rank_sum_neg"], res["W"]) == (11.0, 4.0, 4.0)
    assert res["effect_r"] == pytest.approx((1 + 2 + 3 + 5 - 4) / 15)
    # exact two-sided p: the share of the 2^5 sign patterns whose R+ is as extreme as 11 (or as 4)
    ranks = np.arange(1, 6)
    r_pos = [ranks[np.array(s, bool)].sum() for s in itertools.product([0, 1], repeat=5)]
    t_obs = 11
    p = np.mean([(t >= t_obs) or (t <= 15 - t_obs) for t in r_pos])
    assert p == pytest.approx(14 / 32)
    assert res["p_value"] == pytest.approx(p) and res["method"] == "exact"
    assert res["median_diff"] == 2.0 and res["mean_diff"] == pytest.approx(1.4)
    # as two vectors, with a NaN pair dropped
    b = np.array([0.0, 0.0, 0.0, 0.0, 0.0, np.nan])
    again = wilcoxon_paired(np.array(d + [9.0]), b)
    assert again["n"] == 5 and again["p_value"] == pytest.approx(p)


def test_wilcoxon_zeros_and_degenerate_cases():
    zeros = wilcoxon_paired([0.3, 0.1], [0.3, 0.1])
    assert np.isnan(zeros["p_value"]) and zeros["effect_r"] == 0.0 and zeros["n"] == 2
    assert "zero" in zeros["note"]
    one = wilcoxon_paired([1.0], [0.0])
    assert np.isnan(one["p_value"]) and one["effect_r"] == 1.0 and "fewer than 2" in one["note"]
    empty = wilcoxon_paired([np.nan], [1.0])
    assert empty["n"] == 0 and np.isnan(empty["p_value"]) and np.isnan(empty["effect_r"])
    # a zero is dropped before ranking: [0, 1, 2, 3] ranks 1, 2, 3 -> R+ = 6, R- = 0
    with_zero = wilcoxon_paired([0.0, 1.0, 2.0, 3.0])
    assert with_zero["n"] == 4 and with_zero["n_zero"] == 1
    assert with_zero["rank_sum_pos"] == 6.0 and with_zero["effect_r"] == 1.0
    assert with_zero["p_value"] == pytest.approx(2 / 8)  # exact, n = 3: R+ = 6 or 0 of 8 patterns


def test_holm_hand_vector():
    p = [0.01, 0.04, 0.03, 0.005, np.nan]
    # sorted: 0.005 (x4) = 0.02, 0.01 (x3) = 0.03, 0.03 (x2) = 0.06, 0.04 (x1) = 0.04 -> max so far 0.06
    expected = [0.03, 0.06, 0.06, 0.02, np.nan]
    np.testing.assert_allclose(holm(p), expected)
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])  # 0.9 x 1 < 0.5 x 2: monotone
    assert holm([]).size == 0


def test_seed_spread():
    s = seed_spread([0.2, 0.4, np.nan, 0.6])
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.4) and s["sd"] == pytest.approx(0.2)
    assert (s["min"], s["max"]) == (0.2, 0.6)
    assert np.isnan(seed_spread([0.3])["sd"]) and seed_spread([])["n"] == 0
