"""Linear probe of the learned codes (paper section 3.8, Figure 5).

Each image becomes a binary bag of codes: one input per codebook entry, 1 if the code occurs in the
image's L codes. Order is discarded (the permutation-invariant decoder cannot see it either) and, as in
the paper, so is multiplicity (which only nearest quantization produces). For each binary attribute a
logistic regression is scored by stratified k-fold accuracy and compared with always predicting the
majority class.

Two orders of the attributes, as sort keys: :func:`gain_order` (largest accuracy gain over the baseline first),
the order of probe.json's "attributes" and of the code atlas (:mod:`pivq.analysis.atlas` picks the attributes the
codes explain most beyond the majority class); :func:`accuracy_order` (highest cross-validated accuracy first),
Figure 5's with ``report.figures.probe_order: accuracy`` (the paper's "top 15 most predictable attributes", which
include near-baseline ones such as bald; ``probe_order: gain`` draws gain_order instead).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_validate

# L2-regularised logistic regression at scikit-learn's default strength. liblinear is fast and exact
# on a few thousand sparse binary rows and deterministic given random_state.
PROBE_C = 1.0
PROBE_SOLVER = "liblinear"
TOP_CODES = 5


def code_presence_matrix(codes: np.ndarray, K: int) -> sp.csr_matrix:
    """(N, K) sparse 0/1 matrix: entry (i, c) is 1 if code c occurs in image i (repeats count once)."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codes must be an integer (N, L) array, got {codes.dtype} of shape {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= K):
        raise ValueError(f"codes must lie in [0, {K}), got range [{codes.min()}, {codes.max()}]")
    n, L = codes.shape
    rows = np.repeat(np.arange(n), L)
    matrix = sp.csr_matrix((np.ones(n * L), (rows, codes.ravel())), shape=(n, K))
    matrix.data[:] = 1.0  # duplicates were summed on construction; presence is what we want
    return matrix


def gain_order(row: dict[str, Any]) -> tuple[float, str]:
    """Sort key of a probe result: largest accuracy gain over the baseline first, then by name (probe.json's and
    the code atlas's order; Figure 5's with ``probe_order: gain``)."""
    return -(row["accuracy_mean"] - row["baseline"]), row["name"]


def accuracy_order(row: dict[str, Any]) -> tuple[float, str]:
    """Sort key of a probe result: highest cross-validated accuracy_mean first, then by name (Figure 5's order with
    ``probe_order: accuracy``: the paper's "most predictable attributes")."""
    return -row["accuracy_mean"], row["name"]


def binary_labels(values: pd.Series) -> np.ndarray | None:
    """0/1 labels from a bool or numeric column without NaN; None if it is not binary."""
    unique = set(pd.unique(values).tolist())
    if not unique <= {0, 1}:  # True == 1 and False == 0, so bool columns pass
        return None
    return values.astype(int).to_numpy()


def _make_model(seed: int, max_iter: int) -> LogisticRegression:
    return LogisticRegression(C=PROBE_C, solver=PROBE_SOLVER, max_iter=max_iter, random_state=seed)


def _probe_one(X: sp.csr_matrix, y: np.ndarray, folds: int, seed: int, max_iter: int, n_jobs: int) -> dict[str, Any]:
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    cv = cross_validate(_make_model(seed, max_iter), X, y, cv=splitter, n_jobs=n_jobs, return_estimator=True)
    scores = [float(s) for s in cv["test_score"]]
    # One fit on all rows, only to name the codes the probe leans on (not used for accuracy).
    full = _make_model(seed, max_iter).fit(X, y)
    # Read convergence from the iteration counts: warnings raised in joblib workers would be lost.
    converged = all(int(np.max(m.n_iter_)) < max_iter for m in [*cv["estimator"], full])
    weights = full.coef_[0]
    # Stable sort so ties (e.g. codes never seen, weight 0) resolve by code index.
    order = np.argsort(-weights, kind="stable")
    top_pos = [{"code": int(c), "weight": float(weights[c])} for c in order[:TOP_CODES]]
    order = np.argsort(weights, kind="stable")
    top_neg = [{"code": int(c), "weight": float(weights[c])} for c in order[:TOP_CODES]]
    positive_rate = float(y.mean())
    return {
        "n": int(len(y)),
        "positive_rate": positive_rate,
        "accuracy_mean": float(np.mean(scores)),
        "accuracy_std": float(np.std(scores)),  # population std over folds (ddof=0)
        "fold_accuracies": scores,
        "baseline": max(positive_rate, 1.0 - positive_rate),
        "converged": converged,
        "top_positive_codes": top_pos,
        "top_negative_codes": top_neg,
    }


def probe_attributes(
    codes: np.ndarray,
    K: int,
    attributes: pd.DataFrame,
    columns: list[str],
    folds: int = 5,
    seed: int = 0,
    max_iter: int = 1000,
    n_jobs: int = 1,
) -> dict[str, Any]:
    """Cross-validated logistic-regression accuracy per binary attribute, against the majority baseline.

    ``attributes`` rows align with ``codes`` rows by position. Rows with NaN in a column are dropped for
    that column only. Attributes that are not binary, or whose minority class has fewer than ``folds``
    members (stratified folds would be impossible), are listed under "skipped" with the reason.
    Results are sorted by accuracy gain over the baseline, largest first (:func:`gain_order`).
    ``n_jobs`` parallelises the folds (joblib); results do not depend on it.
    """
    codes = np.asarray(codes)
    if len(attributes) != len(codes):
        raise ValueError(f"attributes has {len(attributes)} rows but codes has {len(codes)} images")
    missing = [c for c in columns if c not in attributes.columns]
    if missing:
        raise KeyError(f"attribute columns not found: {missing}; available: {sorted(attributes.columns)}")
    X = code_presence_matrix(codes, K)
    results, skipped = [], []
    for name in columns:
        column = attributes[name].reset_index(drop=True)
        keep = column.notna().to_numpy()
        y = binary_labels(column[keep])
        if y is None:
            values = sorted(map(str, pd.unique(column[keep])))[:5]
            skipped.append({"name": name, "reason": f"not binary (values include {values})"})
            continue
        minority = int(min(y.sum(), len(y) - y.sum()))
        if minority < folds:
            skipped.append({
                "name": name,
                "reason": f"minority class has {minority} rows, fewer than folds={folds}",
                "n": int(len(y)),
            })
            continue
        results.append({"name": name, **_probe_one(X[keep], y, folds, seed, max_iter, n_jobs)})
    results.sort(key=gain_order)
    return {
        "folds": folds,
        "seed": seed,
        "n_images": int(len(codes)),
        "K": int(K),
        "model": f"LogisticRegression(C={PROBE_C}, solver={PROBE_SOLVER!r}, penalty='l2', max_iter={max_iter})",
        "features": "code presence (1 if the code occurs in the image), one per codebook entry",
        "attributes": results,
        "skipped": skipped,
    }
