"""Agreement metrics between two embedding matrices of the same sentences (rows L2-normalised).

Contract: every function takes float arrays of shape [N, D] (or vectors) and returns plain
Python floats; ``spearman`` handles ties with average ranks, like scipy.stats.spearmanr.
"""

from __future__ import annotations

import numpy as np


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b``; shape [N]."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return num / np.clip(den, 1e-12, None)


def rankdata(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array; tied values share the average of their ranks."""
    values = np.asarray(values)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    # Boundaries of runs of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of two equal-length 1-D arrays (NaN when either is constant)."""
    rx, ry = rankdata(np.ravel(x)), rankdata(np.ravel(y))
    rx -= rx.mean()
    ry -= ry.mean()
    den = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / den) if den else float("nan")


def pairwise_upper(embeddings: np.ndarray) -> np.ndarray:
    """All pairwise cosine similarities i < j, flattened in a fixed order."""
    e = np.asarray(embeddings, dtype=np.float64)
    e = e / np.clip(np.linalg.norm(e, axis=1, keepdims=True), 1e-12, None)
    sims = e @ e.T
    return sims[np.triu_indices(len(e), k=1)]


def pairwise_spearman(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Spearman correlation between the two sets of all pairwise similarities."""
    return spearman(pairwise_upper(reference), pairwise_upper(candidate))


def nearest_neighbours(embeddings: np.ndarray) -> np.ndarray:
    """Index of each row's most similar other row (self excluded)."""
    e = np.asarray(embeddings, dtype=np.float64)
    e = e / np.clip(np.linalg.norm(e, axis=1, keepdims=True), 1e-12, None)
    sims = e @ e.T
    np.fill_diagonal(sims, -np.inf)
    return sims.argmax(axis=1)


def nn_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Fraction of rows whose top-1 neighbour is the same under both embeddings."""
    return float((nearest_neighbours(reference) == nearest_neighbours(candidate)).mean())


def agreement(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """The report's accuracy row: cosine mean/min/p1, pairwise Spearman, NN agreement."""
    cos = row_cosines(reference, candidate)
    return {
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "cosine_p1": float(np.percentile(cos, 1)),
        "spearman": pairwise_spearman(reference, candidate),
        "nn_agreement": nn_agreement(reference, candidate),
    }
