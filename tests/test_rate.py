"""Tests for pivq.analysis.rate: entropy coding of PI-VQ code sets (issue 7, measured rate)."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("constriction")

from pivq.analysis.rate import (  # noqa: E402
    RepeatedCodesError,
    decode_sets,
    encode_sets,
    fit_code_model,
    ideal_bits,
    measure_rate,
)

# Coder overhead per message, in bits: constriction's range coder emits whole 32-bit words, so the
# length is rounded up to a word (< 32 bits), plus termination of the range state and the 24-bit
# probability quantization of each Bernoulli decision (measured < 32 bits together for K <= 4096;
# worst observed real - ideal was ~30 bits over 1000 messages). Two words bound it.
OVERHEAD_BITS = 64


def _uniform_sets(rng, n, K, L):
    return np.argsort(rng.random((n, K)), axis=1)[:, :L]


def _balanced_sets(K, L):
    """K cyclic windows: every code appears in exactly L rows -> exactly uniform fitted model."""
    return np.array([(np.arange(L) + s) % K for s in range(K)])


def _skewed_sets(rng, n, K, L, s=1.0):
    """Sets drawn without replacement with Zipf weights (Gumbel top-L)."""
    g = -s * np.log(np.arange(1, K + 1)) + rng.gumbel(size=(n, K))
    return np.argsort(-g, axis=1)[:, :L]


@pytest.mark.parametrize("K,L,n", [(1, 1, 3), (4, 1, 10), (4, 4, 5), (16, 8, 20), (128, 16, 20), (100, 99, 5),
                                   (4096, 512, 3)])
def test_round_trip(K, L, n):
    rng = np.random.default_rng(K * 1000 + L)
    model = fit_code_model(_uniform_sets(rng, 50, K, L), K)
    test = _uniform_sets(rng, n, K, L)
    msgs = encode_sets(test, model)
    assert len(msgs) == n and all(m.dtype == np.uint32 for m in msgs)
    out = decode_sets(msgs, model, L)
    np.testing.assert_array_equal(out, np.sort(test, axis=1))


def test_round_trip_skewed_and_unseen_codes():
    rng = np.random.default_rng(3)
    K, L = 64, 8
    train = _skewed_sets(rng, 200, K, L, s=2.0)  # tail codes essentially never seen in training
    test = np.array([np.arange(K - L, K), np.arange(L)])
    model = fit_code_model(train, K)
    assert np.count_nonzero(model.counts) < K
    np.testing.assert_array_equal(decode_sets(encode_sets(test, model), model, L), test)


def test_order_free():
    """Permuting codes within an image yields the identical message: orderings are not paid for."""
    rng = np.random.default_rng(4)
    K, L = 128, 16
    model = fit_code_model(_uniform_sets(rng, 100, K, L), K)
    s = _uniform_sets(rng, 1, K, L)
    a, b = encode_sets(s, model)[0], encode_sets(s[:, ::-1], model)[0]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("K,L", [(8, 3), (128, 16), (1024, 100)])
def test_uniform_model_is_exactly_eq4_and_rate_bounded(K, L):
    rng = np.random.default_rng(K + L)
    train = _balanced_sets(K, L)
    test = _uniform_sets(rng, 40, K, L)
    model = fit_code_model(train, K)
    bound = math.log2(math.comb(K, L))
    # Uniform conditional-Bernoulli model: every set costs exactly log2 C(K, L) bits.
    np.testing.assert_allclose(ideal_bits(test, model), bound, rtol=0, atol=1e-6)
    r = measure_rate(train, test, K)
    assert r["roundtrip_ok"] is True
    assert r["eq4_bits_K"] == pytest.approx(bound)
    assert r["bits_max"] <= bound + OVERHEAD_BITS
    assert r["bits_mean"] >= bound - 1e-6  # no code beats the entropy on average (uniform: = bound)


def test_sum_of_decisions_matches_closed_form():
    """The sequential q(c, r) factorisation telescopes to the closed-form -log2 P(S)."""
    from pivq.analysis.rate import _decisions

    rng = np.random.default_rng(5)
    K, L = 50, 7
    model = fit_code_model(_skewed_sets(rng, 300, K, L), K)
    test = _skewed_sets(rng, 10, K, L)
    table = model.log_esp(L)
    for row, h in zip(test, ideal_bits(test, model)):
        pres = np.zeros(K, dtype=np.int8)
        pres[row] = 1
        sym, q = _decisions(pres, table, model.log_w, L)
        assert np.all((q > 0) & (q < 1))
        bits = -np.sum(np.where(sym == 1, np.log2(q), np.log2(1 - q)))
        assert bits == pytest.approx(h, rel=1e-9, abs=1e-9)


def test_skewed_distribution_costs_less_than_uniform():
    rng = np.random.default_rng(6)
    K, L = 128, 16
    skew = measure_rate(_skewed_sets(rng, 2000, K, L), _skewed_sets(rng, 100, K, L), K)
    unif = measure_rate(_uniform_sets(rng, 2000, K, L), _uniform_sets(rng, 100, K, L), K)
    assert skew["roundtrip_ok"] and unif["roundtrip_ok"]
    assert skew["bits_mean"] < unif["bits_mean"]
    assert skew["ideal_bits_mean"] < unif["ideal_bits_mean"] - 5
    assert skew["bits_mean"] < skew["eq4_bits"]
    # same skewed test sets under a uniform model cost ~ log2 C(K, L)
    model_u = fit_code_model(_balanced_sets(K, L), K)
    test = _skewed_sets(rng, 100, K, L)
    model_s = fit_code_model(_skewed_sets(rng, 2000, K, L), K)
    assert ideal_bits(test, model_s).mean() < ideal_bits(test, model_u).mean()


def test_measure_rate_fields():
    rng = np.random.default_rng(7)
    K, L = 64, 8
    train, test = _uniform_sets(rng, 100, K, L), _uniform_sets(rng, 10, K, L)
    r = measure_rate(train, test, K, roundtrip=3)
    assert r["roundtrip_checked"] == 3 and r["roundtrip_ok"] is True
    assert r["table_bits"] == K * math.ceil(math.log2(101))
    assert r["bits_min"] <= r["bits_mean"] <= r["bits_max"]
    assert r["k_data"] <= K and r["eq4_bits"] == pytest.approx(math.log2(math.comb(r["k_data"], L)))
    assert measure_rate(train, test, K, roundtrip=False)["roundtrip_ok"] is None


def test_repeated_codes_raise():
    """Documented choice: multisets (nearest-neighbour repeats) raise RepeatedCodesError."""
    K = 16
    good = np.array([[0, 1, 2], [3, 4, 5]])
    bad = np.array([[0, 1, 2], [3, 3, 5]])
    model = fit_code_model(good, K)
    with pytest.raises(RepeatedCodesError, match="repeat a code"):
        encode_sets(bad, model)
    with pytest.raises(ValueError, match="row 1"):
        fit_code_model(bad, K)
    with pytest.raises(RepeatedCodesError):
        measure_rate(good, bad, K)


def test_invalid_inputs():
    with pytest.raises(ValueError):
        fit_code_model(np.array([[0, 16]]), 16)
    with pytest.raises(ValueError):
        fit_code_model(np.array([[0, 1]]), 16, smoothing=0)
    with pytest.raises(ValueError):
        fit_code_model(np.array([0, 1]), 16)
