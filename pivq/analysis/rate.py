"""Measured rate of PI-VQ code sets (issue 7): real entropy coding of each image's code SET.

The capacity of eq. 4, ``log2 C(K_data, L)``, is an upper bound. This module measures what the
code sets actually cost when each test image's set is entropy coded (range coding, via
``constriction``) with a model of code frequencies estimated on the training set, as VBQ does
(supplement S1.2: "for data compression, we estimate the frequencies on training data and include
them in the decoder"; the size of that table, had it to be transmitted, is reported separately).

Coding scheme: a set, not a sequence
------------------------------------
A set S of L distinct codes out of K is coded as K binary presence decisions x_c = [c in S],
c = 0, 1, ..., K-1, so no order is ever transmitted (the L! orderings are not paid for) and the
decoder returns the set sorted.

Frequency model. ``fit_code_model`` estimates, for each code, the fraction of training images
whose set contains it, smoothed: p_c = (count_c + a) / (N_train + 2a), in (0, 1) for a > 0.
Taken alone, independent Bernoulli(p_c) presences would waste probability on sets whose size is
not L. We therefore code with the exact conditional of that independent model given |S| = L
(the "conditional Bernoulli" / conditional Poisson sampling model):

    P(S) = prod_{c in S} w_c / E_L(w_0, ..., w_{K-1}),     w_c = p_c / (1 - p_c),

where E_r(w_c, ..., w_{K-1}) =: E(c, r) is the elementary symmetric polynomial of degree r in the
weights of codes c..K-1. It obeys E(c, r) = E(c+1, r) + w_c E(c+1, r-1), E(K, 0) = 1,
E(K, r>0) = 0, and is tabulated in log space for r = 0..L (``_log_esp_table``).

Sequential factorisation. Walking c = 0..K-1 with r codes still to place among the m = K - c
codes not yet decided, the chain rule gives the presence probability

    q(c, r) = P(x_c = 1 | r, m) = w_c E(c+1, r-1) / E(c, r),
    1 - q(c, r) = E(c+1, r) / E(c, r).

For 0 < r < m both E(c+1, r-1) > 0 and E(c+1, r) > 0 (there are at least r-1 resp. r codes left),
so q is strictly inside (0, 1): a valid probability with no clamping of the mixture needed.
The forced cases cost zero bits and are never sent to the coder: r == 0 (every remaining code is
absent) and r == m (every remaining code is present). Multiplying the decisions along the path of
S telescopes to P(S) above, so the ideal information content is
-log2 P(S) = log2 E(0, L) - sum_{c in S} log2 w_c (``ideal_bits``).

Uniform model recovers eq. 4 exactly. If all w_c = w, then E(c, r) = C(K-c, r) w^r, hence
q(c, r) = w C(m-1, r-1) w^(r-1) / (C(m, r) w^r) = r / m, and the product of the decisions along any
path is (L/K)((L-1)/(K-1))... = 1 / C(K, L): every set costs exactly log2 C(K, L) bits, i.e. the
eq. 4 capacity with K_data = K. A skewed model costs fewer bits on sets that follow the skew.

Repeated codes. A nearest-neighbour quantizer may emit the same code twice within an image (a
multiset, bounded by eq. 2, not eq. 4). This coder handles SETS only: any row with a repeated code
raises ``RepeatedCodesError`` (a ``ValueError``) naming the issue, the first offending row and the
number of such rows; it is never silently deduplicated (that would be lossy).

Determinism. The decoder recomputes the same float probabilities as the encoder from the same
model; encode and decode must use the same model object (or one rebuilt from the same counts) and
the same numpy build. Messages are lists of uint32 words (constriction ``RangeEncoder``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

try:  # imported lazily-friendly: the module still imports (and says why) without constriction
    import constriction
except ImportError:  # pragma: no cover - exercised only without the dependency
    constriction = None

LN2 = math.log(2.0)


class RepeatedCodesError(ValueError):
    """A code occurs more than once within one image: a multiset, which this set coder refuses."""


@dataclass
class CodeModel:
    """Per-code presence frequencies from training sets, plus cached E(c, r) tables per L."""

    K: int
    n_train: int
    smoothing: float
    counts: np.ndarray  # (K,) int64: number of training images containing each code
    p: np.ndarray  # (K,) float64 smoothed presence probability, in (0, 1)
    log_w: np.ndarray  # (K,) float64 log(p / (1 - p))
    _tables: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def log_esp(self, L: int) -> np.ndarray:
        """Natural-log table logE[c, r] = log E(c, r), shape (K+1, L+1); cached per L."""
        if L not in self._tables:
            self._tables[L] = _log_esp_table(self.log_w, L)
        return self._tables[L]


def _log_esp_table(log_w: np.ndarray, L: int) -> np.ndarray:
    K = log_w.shape[0]
    table = np.full((K + 1, L + 1), -np.inf)
    table[K, 0] = 0.0
    for c in range(K - 1, -1, -1):
        nxt = table[c + 1]
        row = table[c]
        row[0] = 0.0
        if L > 0:
            row[1:] = np.logaddexp(nxt[1:], log_w[c] + nxt[:-1])
    return table


def _require_constriction() -> None:
    if constriction is None:
        raise ImportError("pivq.analysis.rate needs the entropy coder: pip install constriction")


def _validate_sets(codes: Any, K: int, name: str = "codes") -> np.ndarray:
    arr = np.asarray(codes)
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (N, L), got {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be integer code indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    N, L = arr.shape
    if L > K:
        raise ValueError(f"{name}: L={L} codes per image cannot be distinct with K={K}")
    if arr.size and (arr.min() < 0 or arr.max() >= K):
        raise ValueError(f"{name}: code indices must lie in [0, {K}), got [{arr.min()}, {arr.max()}]")
    srt = np.sort(arr, axis=1)
    if L > 1:
        dup_rows = np.flatnonzero((np.diff(srt, axis=1) == 0).any(axis=1))
        if dup_rows.size:
            i = int(dup_rows[0])
            vals, cnt = np.unique(srt[i], return_counts=True)
            raise RepeatedCodesError(
                f"{name}: {dup_rows.size} of {N} images repeat a code within the image (first: row {i}, "
                f"codes {vals[cnt > 1][:5].tolist()}). The set coder handles distinct codes only "
                "(matching quantization, eq. 4); repeated codes from a nearest-neighbour quantizer form a "
                "multiset (eq. 2) and are not supported here."
            )
    return srt


def fit_code_model(train_codes: Any, K: int, smoothing: float = 0.5) -> CodeModel:
    """Fit smoothed per-code presence frequencies p_c = (count_c + a) / (N_train + 2a).

    ``train_codes``: (N, L) integer array of distinct codes per row. ``smoothing`` a must be > 0 so
    that codes unseen in training stay encodable (they cost about log2((N + 2a) / a) bits more).
    """
    if not isinstance(K, (int, np.integer)) or K < 1:
        raise ValueError(f"K must be a positive integer, got {K!r}")
    if not smoothing > 0:
        raise ValueError(f"smoothing must be > 0 (codes unseen in training must stay codable), got {smoothing}")
    srt = _validate_sets(train_codes, int(K), "train_codes")
    N = srt.shape[0]
    counts = np.bincount(srt.ravel(), minlength=int(K)).astype(np.int64)
    p = (counts + smoothing) / (N + 2.0 * smoothing)
    log_w = np.log(p) - np.log1p(-p)
    return CodeModel(K=int(K), n_train=int(N), smoothing=float(smoothing), counts=counts, p=p, log_w=log_w)


def _decisions(presence: np.ndarray, table: np.ndarray, log_w: np.ndarray, L: int):
    """Non-forced decisions of one set: (symbols int32, q float64) in coding order."""
    K = presence.shape[0]
    placed_before = np.concatenate(([0], np.cumsum(presence)[:-1]))
    r = L - placed_before
    m = K - np.arange(K)
    live = (r > 0) & (r < m)
    c = np.flatnonzero(live)
    rc = r[live]
    log_q = log_w[c] + table[c + 1, rc - 1] - table[c, rc]
    return presence[live].astype(np.int32), np.exp(log_q)


def ideal_bits(codes: Any, model: CodeModel) -> np.ndarray:
    """Information content -log2 P(S) of each set under the model (closed form), shape (M,)."""
    srt = _validate_sets(codes, model.K)
    L = srt.shape[1]
    table = model.log_esp(L)
    return (table[0, L] - model.log_w[srt].sum(axis=1)) / LN2


def encode_sets(codes: Any, model: CodeModel) -> list[np.ndarray]:
    """Range-code each row's code set; returns one uint32-word message per image."""
    _require_constriction()
    srt = _validate_sets(codes, model.K)
    M, L = srt.shape
    table = model.log_esp(L)
    family = constriction.stream.model.Bernoulli(perfect=False)
    messages = []
    for i in range(M):
        presence = np.zeros(model.K, dtype=np.int8)
        presence[srt[i]] = 1
        symbols, q = _decisions(presence, table, model.log_w, L)
        enc = constriction.stream.queue.RangeEncoder()
        if symbols.size:
            enc.encode(symbols, family, q)
        messages.append(np.asarray(enc.get_compressed(), dtype=np.uint32).copy())
    return messages


def decode_sets(messages: list[np.ndarray], model: CodeModel, L: int) -> np.ndarray:
    """Decode messages from ``encode_sets`` back to code sets, (M, L) int64, each row sorted."""
    _require_constriction()
    K = model.K
    if not 0 <= L <= K:
        raise ValueError(f"L must lie in [0, K={K}], got {L}")
    table = model.log_esp(L)
    log_w = model.log_w
    Bern = constriction.stream.model.Bernoulli
    out = np.empty((len(messages), L), dtype=np.int64)
    for i, msg in enumerate(messages):
        dec = constriction.stream.queue.RangeDecoder(np.asarray(msg, dtype=np.uint32))
        found: list[int] = []
        r = L
        for c in range(K):
            m = K - c
            if r == 0:
                break
            if r == m:  # forced: every remaining code is present
                found.extend(range(c, K))
                r = 0
                break
            q = math.exp(log_w[c] + table[c + 1, r - 1] - table[c, r])
            if int(dec.decode(Bern(q, perfect=False))):
                found.append(c)
                r -= 1
        out[i] = found
    return out


def _log2_comb(n: int, k: int) -> float:
    return math.log2(math.comb(n, k)) if 0 <= k <= n else float("nan")


def measure_rate(
    train_codes: Any,
    test_codes: Any,
    K: int,
    smoothing: float = 0.5,
    roundtrip: bool | int = True,
) -> dict[str, Any]:
    """Entropy code every test set with a model fitted on the training sets; report bits per image.

    ``roundtrip``: True decodes every message and checks it equals the sorted input set; an int n
    checks only the first n images (decoding is a Python loop over up to K decisions per image);
    False skips it (``roundtrip_ok`` is then None).

    Returned keys (bits per image unless stated): ``bits_mean/max/min`` (real compressed length,
    32 x words), ``ideal_bits_mean/max/min`` (-log2 P(S) under the model), ``overhead_bits_mean``
    (real - ideal), ``eq4_bits`` = log2 C(K_data, L) with K_data the distinct codes used over
    train + test (``k_data``; ``k_data_train`` alone also given), ``eq4_bits_K`` = log2 C(K, L),
    ``table_bits`` = K ceil(log2(N_train + 1)) (the frequency table, if it were transmitted;
    VBQ's header case), ``roundtrip_ok``, ``roundtrip_checked``, and sizes K, L, n_train, n_test.
    """
    model = fit_code_model(train_codes, K, smoothing)
    test = _validate_sets(test_codes, model.K, "test_codes")
    train = _validate_sets(train_codes, model.K, "train_codes")
    M, L = test.shape
    if train.shape[1] != L:
        raise ValueError(f"train sets have L={train.shape[1]}, test sets L={L}")
    messages = encode_sets(test, model)
    real = np.array([32.0 * m.size for m in messages])
    ideal = ideal_bits(test, model)
    if roundtrip is False:
        ok, n_check = None, 0
    else:
        n_check = M if roundtrip is True else min(int(roundtrip), M)
        ok = bool(np.array_equal(decode_sets(messages[:n_check], model, L), test[:n_check]))
    k_data = int(np.unique(np.concatenate([train.ravel(), test.ravel()])).size)
    k_data_train = int(np.count_nonzero(model.counts))

    def stats(x: np.ndarray, name: str) -> dict[str, float]:
        if x.size == 0:
            return {f"{name}_mean": float("nan"), f"{name}_max": float("nan"), f"{name}_min": float("nan")}
        return {f"{name}_mean": float(x.mean()), f"{name}_max": float(x.max()), f"{name}_min": float(x.min())}

    return {
        "K": model.K,
        "L": int(L),
        "n_train": model.n_train,
        "n_test": int(M),
        "smoothing": model.smoothing,
        **stats(real, "bits"),
        **stats(ideal, "ideal_bits"),
        "overhead_bits_mean": float((real - ideal).mean()) if M else float("nan"),
        "k_data": k_data,
        "k_data_train": k_data_train,
        "eq4_bits": _log2_comb(k_data, L),
        "eq4_bits_K": _log2_comb(model.K, L),
        "table_bits": int(model.K * math.ceil(math.log2(model.n_train + 1))),
        "roundtrip_ok": ok,
        "roundtrip_checked": int(n_check),
        "coder": "constriction.stream.queue.RangeEncoder, Bernoulli(perfect=False)",
    }
