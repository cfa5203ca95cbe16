"""Capacity bounds (eqs. 2 and 4) against brute-force counts and the paper; the attribute probe."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from pivq.analysis.capacity import (
    capacity_report,
    capacity_summary,
    codebook_usage,
    conventional_vq_bits,
    matching_bits,
    nearest_bits,
    paper_table2_check,
    pi_upper_bound_bits,
)
from pivq.analysis.probe import code_presence_matrix, probe_attributes

# --- capacity: small cases by hand and by enumeration -------------------------------------------


def test_hand_computed_small_cases():
    assert conventional_vq_bits(4, 2) == pytest.approx(4.0)
    assert matching_bits(4, 2) == pytest.approx(math.log2(6))  # C(4, 2) = 6
    assert pi_upper_bound_bits(4, 2) == pytest.approx(math.log2(10))  # multisets: C(5, 2) = 10
    # eq. 2, K_data=4, K_img=2, L=3: C(4, 2) * C(4, 1) = 24
    assert nearest_bits(4, 2, 3) == pytest.approx(math.log2(24))


@pytest.mark.parametrize("k_data,k_img,L", [(4, 1, 3), (4, 2, 3), (5, 3, 4), (6, 2, 5), (5, 3, 3)])
def test_eq2_counts_working_sets_times_multisets(k_data, k_img, L):
    """|S| x |R|: every K_img-subset of the codes, times every size-L multiset drawn from that subset."""
    pairs = sum(
        1
        for working_set in itertools.combinations(range(k_data), k_img)
        for _ in itertools.combinations_with_replacement(working_set, L)
    )
    assert 2 ** nearest_bits(k_data, k_img, L) == pytest.approx(pairs)
    # The supplement's remark: distinct representations (multisets using at most K_img codes) are fewer.
    distinct = sum(
        1 for m in itertools.combinations_with_replacement(range(k_data), L) if len(set(m)) <= k_img
    )
    assert distinct <= pairs


@pytest.mark.parametrize("K,L", [(3, 2), (4, 3), (6, 4)])
def test_matching_and_upper_bound_by_enumeration(K, L):
    sets = sum(1 for _ in itertools.combinations(range(K), L))
    multisets = sum(1 for _ in itertools.combinations_with_replacement(range(K), L))
    assert 2 ** matching_bits(K, L) == pytest.approx(sets)
    assert 2 ** pi_upper_bound_bits(K, L) == pytest.approx(multisets)


def test_paper_settings():
    assert matching_bits(4096, 512) == pytest.approx(2220.71, abs=0.01)
    assert round(matching_bits(4096, 512)) == 2221  # Table 2, matching: agrees
    assert round(pi_upper_bound_bits(4096, 512)) == 2313  # "around 2313 bits" (section 3.4)
    assert conventional_vq_bits(1024, 256) == 2560  # the VQ-GAN comparison in section 4.1
    # Eq. 2 at Table 2's nearest setting gives 611, while the paper prints 614.
    assert nearest_bits(4096, 49, 512) == pytest.approx(611.28, abs=0.01)


def test_paper_table2_check_reports_both_numbers():
    rows = {r["quantizer"]: r for r in paper_table2_check()}
    assert rows["matching"]["bits_reported"] == 2221 and rows["matching"]["agrees"]
    assert rows["nearest"]["bits_reported"] == 614 and rows["nearest"]["bits_equation_rounded"] == 611
    assert not rows["nearest"]["agrees"]
    assert all("eq." in r["formula"] for r in rows.values())


def test_no_overflow_at_large_settings():
    summary = capacity_summary(4096, 1024, k_img=49)
    for key in ("conventional_vq_bits", "nearest_bits", "matching_bits", "pi_upper_bound_bits"):
        assert math.isfinite(summary[key]) and summary[key] > 0
    assert summary["k_data"] == 4096
    assert summary["matching_bits"] < summary["pi_upper_bound_bits"] < summary["conventional_vq_bits"]


def test_errors_name_the_numbers():
    with pytest.raises(ValueError, match=r"L=600.*k_data=512"):
        matching_bits(512, 600)
    with pytest.raises(ValueError, match="k_img=60"):
        nearest_bits(50, 60, 512)
    with pytest.raises(ValueError, match="k_data=5000"):
        capacity_summary(4096, 512, k_data=5000)
    assert capacity_summary(16, 32)["matching_bits"] is None  # L > K: eq. 4 does not apply


# --- usage and the per-run report ------------------------------------------------------------------


def test_codebook_usage_hand_made():
    codes = np.array([[0, 0, 1], [2, 3, 4]])
    usage = codebook_usage(codes, K=8)
    assert usage["k_data"] == 5
    assert (usage["k_img_max"], usage["k_img_min"], usage["k_img_mean"]) == (3, 2, 2.5)
    assert usage["repeated_fraction"] == pytest.approx((1 / 3 + 0) / 2)
    p = np.array([2, 1, 1, 1, 1]) / 6
    assert usage["code_entropy_bits"] == pytest.approx(-(p * np.log2(p)).sum())


def test_codebook_usage_rejects_bad_codes():
    with pytest.raises(ValueError, match="lie in"):
        codebook_usage(np.array([[0, 9]]), K=8)
    with pytest.raises(ValueError, match="integers"):
        codebook_usage(np.array([[0.0, 1.0]]), K=8)


def test_capacity_report_picks_the_equation():
    rng = np.random.default_rng(0)
    distinct = np.stack([rng.permutation(64)[:16] for _ in range(50)])
    report = capacity_report(distinct, K=64, L=16, quantizer="matching")
    assert report["equation"] == "eq4" and report["bits"] == pytest.approx(matching_bits(report["k_data"], 16))
    repeating = rng.integers(0, 8, size=(50, 16))
    report = capacity_report(repeating, K=64, L=16, quantizer="sinkhorn")
    assert report["equation"] == "eq2"
    assert report["bits"] == pytest.approx(nearest_bits(report["k_data"], report["k_img_max"], 16))
    with pytest.raises(ValueError, match="distinct"):
        capacity_report(repeating, K=64, L=16, quantizer="matching")
    with pytest.raises(ValueError, match="unknown quantizer"):
        capacity_report(repeating, K=64, L=16, quantizer="lookup")


# --- probe ------------------------------------------------------------------------------------------


def _synthetic(n: int = 400, K: int = 32, L: int = 6, seed: int = 0):
    """Codes from 1..K-1; half the images also carry code 0, which decides attribute "has_zero"."""
    rng = np.random.default_rng(seed)
    codes = np.stack([rng.permutation(np.arange(1, K))[:L] for _ in range(n)])
    has_zero = rng.random(n) < 0.5
    codes[has_zero, 0] = 0
    attributes = pd.DataFrame({
        "has_zero": has_zero,
        "noise": (rng.random(n) < 0.3).astype(float),
    })
    return codes, K, attributes


def test_code_presence_matrix_counts_repeats_once():
    m = code_presence_matrix(np.array([[1, 1, 2], [0, 3, 3]]), K=5)
    assert m.shape == (2, 5)
    np.testing.assert_array_equal(m.toarray(), [[0, 1, 1, 0, 0], [1, 0, 0, 1, 0]])


def test_probe_finds_the_deciding_code_and_not_noise():
    codes, K, attributes = _synthetic()
    result = probe_attributes(codes, K, attributes, ["has_zero", "noise"], folds=5, seed=0)
    rows = {r["name"]: r for r in result["attributes"]}
    decided, noise = rows["has_zero"], rows["noise"]
    assert decided["accuracy_mean"] > 0.97 and decided["accuracy_mean"] > decided["baseline"] + 0.3
    assert decided["top_positive_codes"][0]["code"] == 0
    assert abs(noise["accuracy_mean"] - noise["baseline"]) < 0.08
    assert [r["name"] for r in result["attributes"]] == ["has_zero", "noise"]  # sorted by gain
    assert len(decided["fold_accuracies"]) == 5 and result["n_images"] == len(codes)


def test_probe_drops_nan_and_reports_skipped():
    codes, K, attributes = _synthetic(n=200)
    attributes.loc[:19, "noise"] = np.nan
    attributes["rare"] = 0.0
    attributes.loc[:2, "rare"] = 1.0  # 3 positives < 5 folds
    attributes["age"] = np.arange(200) % 3  # not binary
    result = probe_attributes(codes, K, attributes, ["noise", "rare", "age"], folds=5)
    (noise,) = result["attributes"]
    assert noise["n"] == 180
    assert noise["baseline"] == pytest.approx(max(noise["positive_rate"], 1 - noise["positive_rate"]))
    skipped = {s["name"]: s["reason"] for s in result["skipped"]}
    assert "fewer than folds=5" in skipped["rare"] and "not binary" in skipped["age"]


def test_probe_is_deterministic_and_checks_inputs():
    codes, K, attributes = _synthetic(n=150)
    first = probe_attributes(codes, K, attributes, ["has_zero"], seed=3)
    assert first == probe_attributes(codes, K, attributes, ["has_zero"], seed=3)
    with pytest.raises(KeyError, match="missing_col"):
        probe_attributes(codes, K, attributes, ["missing_col"])
    with pytest.raises(ValueError, match="rows"):
        probe_attributes(codes[:10], K, attributes, ["has_zero"])
