"""Comparing a real and a generated set: Yang & Lerch (2020), "On the evaluation of generative
models in music", *Neural Computing and Applications* 32.

Per feature: pairwise Euclidean distances within each set (intra-set) and between the sets
(inter-set), a Gaussian KDE of each distance distribution, and the overlapped area (OA) and KL
divergence of the real intra-set and the inter-set distributions. OA near 1 means a generated
piece is as close to the real pieces as they are to each other. Plain numpy (no scipy).

Example: ``compare_sets(real_features, generated_features)["pitch_range"]["overlap"]  # 0.83``
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import BadInputError
from .metrics import FEATURES

__all__ = ["compare_feature", "compare_sets", "finite_values", "gaussian_kde", "kde_bandwidth", "kl_divergence",
           "overlap_area", "pairwise_distances"]


def kde_bandwidth(samples: Sequence[float] | np.ndarray, rule: str | float = "scott") -> float:
    """Bandwidth of a 1-D Gaussian KDE: Scott's or Silverman's rule, or a number passed through.

    Scott: ``s * n**(-1/5)``; Silverman: ``s * (3n/4)**(-1/5)``, with ``s`` the sample
    standard deviation (ddof=1), as ``scipy.stats.gaussian_kde``. 0.0 for fewer than 2 samples
    or no spread (callers put a floor under it).

    Example: ``kde_bandwidth([0.0, 2.0])  # sqrt(2) * 2**-0.2 = 1.231``
    """
    if not isinstance(rule, str):
        h = float(rule)
        if not h > 0:
            raise BadInputError(f"KDE bandwidth must be positive, got {rule!r}")
        return h
    x = np.asarray(samples, np.float64).ravel()
    if x.size < 2:
        return 0.0
    sd = float(x.std(ddof=1))
    if rule == "scott":
        return sd * x.size ** (-0.2)
    if rule == "silverman":
        return sd * (x.size * 0.75) ** (-0.2)
    raise BadInputError(f"unknown KDE bandwidth rule {rule!r}; use 'scott', 'silverman' or a number")


def gaussian_kde(samples: Sequence[float] | np.ndarray, grid: Sequence[float] | np.ndarray,
                 bandwidth: str | float = "scott") -> np.ndarray:
    """Gaussian kernel density estimate of 1-D ``samples`` evaluated at ``grid``.

    ``f(x) = mean_i N(x; x_i, h^2)`` with ``h`` from :func:`kde_bandwidth`.

    Example: ``gaussian_kde([0.0], [0.0], bandwidth=1.0)  # array([0.3989]) = 1/sqrt(2 pi)``
    """
    x = np.asarray(samples, np.float64).ravel()
    g = np.asarray(grid, np.float64).ravel()
    if x.size == 0:
        raise BadInputError("gaussian_kde: no samples")
    h = kde_bandwidth(x, bandwidth)
    if not h > 0:
        raise BadInputError("gaussian_kde: the samples have no spread; give a bandwidth")
    out = np.empty(g.size)
    step = max(1, 2_000_000 // x.size)  # blocks of the grid keep memory small
    for i in range(0, g.size, step):
        z = (g[i:i + step, None] - x[None, :]) / h
        out[i:i + step] = np.exp(-0.5 * z * z).sum(axis=1)
    return out / (x.size * h * math.sqrt(2 * math.pi))


def _two_kdes(a: np.ndarray, b: np.ndarray, bandwidth: str | float,
              grid_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Common grid and the two densities; None when both sets are one and the same value.

    A bandwidth is floored at 1/200 of the pooled span, so that a set without spread is a
    narrow bump rather than a spike the grid cannot resolve.
    """
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    span = float(hi - lo)
    if span == 0.0:
        return None
    ha = max(kde_bandwidth(a, bandwidth), span / 200)
    hb = max(kde_bandwidth(b, bandwidth), span / 200)
    pad = 6 * max(ha, hb)
    grid = np.linspace(lo - pad, hi + pad, grid_size)
    return grid, gaussian_kde(a, grid, ha), gaussian_kde(b, grid, hb)


def finite_values(x: Sequence[float] | np.ndarray) -> np.ndarray:
    """The finite values of ``x``, flattened, as float64. Example: ``finite_values([1, nan])  # array([1.])``."""
    x = np.asarray(x, np.float64).ravel()
    return x[np.isfinite(x)]


def _overlap_kl(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                bandwidth: str | float, grid_size: int) -> tuple[float, float]:
    """(overlapped area, KL divergence) of the KDEs of two samples, from one pair of KDEs."""
    a, b = finite_values(a), finite_values(b)
    if a.size == 0 or b.size == 0:
        return math.nan, math.nan
    kdes = _two_kdes(a, b, bandwidth, grid_size)
    if kdes is None:
        return 1.0, 0.0
    grid, fa, fb = kdes
    oa = float(min(1.0, np.trapezoid(np.minimum(fa, fb), grid)))
    p, q = fa / fa.sum(), np.maximum(fb / fb.sum(), 1e-12)
    nz = p > 0
    return oa, float(max(0.0, (p[nz] * np.log(p[nz] / q[nz])).sum()))


def overlap_area(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                 bandwidth: str | float = "scott", grid_size: int = 2048) -> float:
    """Overlapped area of the Gaussian KDEs of two 1-D samples: ``integral min(f_a, f_b)``.

    Trapezoidal rule on ``grid_size`` points spanning both samples plus 6 bandwidths. 1.0 for
    identical samples, near 0 for samples far apart; NaN if either has no finite value.

    Example: ``overlap_area([0, 1, 2, 3], [100, 101, 102, 103])  # 0.0``
    """
    return _overlap_kl(a, b, bandwidth, grid_size)[0]


def kl_divergence(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                  bandwidth: str | float = "scott", grid_size: int = 2048) -> float:
    """KL divergence D(f_a || f_b), in nats, of the Gaussian KDEs of two 1-D samples.

    Both densities are evaluated on one grid and normalised to sum 1 there (as Yang & Lerch's
    mgeval does with ``scipy.stats.entropy``); ``f_b`` is floored at 1e-12. 0 for identical
    samples; NaN if either has no finite value.

    Example: ``kl_divergence([0, 1, 2], [0, 1, 2])  # 0.0``
    """
    return _overlap_kl(a, b, bandwidth, grid_size)[1]


def pairwise_distances(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Euclidean distances between feature vectors (rows; scalars are 1-vectors).

    With only ``a``: the ``n(n-1)/2`` distances of its distinct pairs (intra-set). With ``b``:
    all ``len(a) * len(b)`` distances between the sets (inter-set).

    Example: ``pairwise_distances(np.array([0.0, 1.0, 3.0]))  # array([1., 3., 2.])``
    """
    a = np.asarray(a, np.float64)
    a = a.reshape(len(a), -1)
    if b is None:
        d = np.sqrt(((a[:, None, :] - a[None, :, :]) ** 2).sum(-1))
        return d[np.triu_indices(len(a), k=1)]
    b = np.asarray(b, np.float64)
    b = b.reshape(len(b), -1)
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)).ravel()


def _stack(values: Iterable[Any]) -> np.ndarray:
    """Per-piece values as a 2-D array (pieces x dims), dropping pieces with a NaN."""
    rows = [np.asarray(v, np.float64).ravel() for v in values]
    if not rows:
        return np.zeros((0, 1))
    arr = np.stack(rows)
    return arr[np.isfinite(arr).all(axis=1)]


def _mean_std(x: np.ndarray) -> tuple[float | None, float | None]:
    if x.size == 0:
        return None, None
    return float(x.mean()), float(x.std())


def compare_feature(real: Iterable[Any], generated: Iterable[Any],
                    bandwidth: str | float = "scott") -> dict[str, Any]:
    """Yang & Lerch's comparison of one feature between a real and a generated set.

    Returns ``real_mean``/``generated_mean`` (floats, or lists for vector features),
    ``real_std``/``generated_std`` (scalars only), the mean and std of the intra-set distances of
    each set and of the inter-set distances, ``overlap`` (OA of the real intra-set and the
    inter-set distance KDEs), ``kl`` (KL divergence of those, real intra-set first), and for
    scalar features ``value_overlap`` (OA of the two sets' value KDEs). Pieces where the
    feature is undefined (NaN) are left out; ``n_real``/``n_generated`` count the rest.

    Example: ``compare_feature([1, 2, 3, 4], [1, 2, 3, 4])["value_overlap"]  # 1.0``
    """
    r, g = _stack(real), _stack(generated)
    scalar = r.shape[1] == 1 and g.shape[1] == 1
    out: dict[str, Any] = {"n_real": int(len(r)), "n_generated": int(len(g))}

    def mean_of(x: np.ndarray) -> Any:
        if len(x) == 0:
            return None
        return float(x[:, 0].mean()) if scalar else x.mean(axis=0).round(6).tolist()

    out["real_mean"], out["generated_mean"] = mean_of(r), mean_of(g)
    if scalar:
        out["real_std"] = float(r[:, 0].std()) if len(r) else None
        out["generated_std"] = float(g[:, 0].std()) if len(g) else None
    if len(r) >= 2 and len(g) >= 1:
        intra_r, inter = pairwise_distances(r), pairwise_distances(r, g)
        intra_g = pairwise_distances(g) if len(g) >= 2 else np.zeros(0)
        for name, d in (("intra_real", intra_r), ("intra_generated", intra_g), ("inter", inter)):
            out[f"{name}_mean"], out[f"{name}_std"] = _mean_std(d)
        out["overlap"], out["kl"] = _overlap_kl(intra_r, inter, bandwidth, 2048)
    else:
        for name in ("intra_real", "intra_generated", "inter"):
            out[f"{name}_mean"] = out[f"{name}_std"] = None
        out["overlap"] = out["kl"] = None
    if scalar:
        out["value_overlap"] = overlap_area(r, g, bandwidth) if len(r) and len(g) else None
    return out


def compare_sets(real: Sequence[Mapping[str, Any]], generated: Sequence[Mapping[str, Any]],
                 bandwidth: str | float = "scott") -> dict[str, dict[str, Any]]:
    """:func:`compare_feature` for every feature of :func:`piece_features` dicts.

    Example: ``compare_sets(real_feats, gen_feats)["pitch_range"]["overlap"]  # 0.83``
    """
    return {name: compare_feature([f[name] for f in real], [f[name] for f in generated], bandwidth)
            for name in FEATURES}
