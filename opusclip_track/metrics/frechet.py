"""Frechet distance between two Gaussians fitted to feature sets: the math shared by FID and FVD.

Features are accumulated in float64 as a running sum, a sum of outer products and a count, so a set fed in
any number of batches gives exactly the statistics of the whole set at once (up to float64 summation order),
and the statistics reduce across processes with a plain sum.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from opusclip_track._checks import ValueRange, check_value_range
from opusclip_track.metrics._input import prepare_videos


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor, *,
                     ranks: tuple[int | None, int | None] = (None, None)) -> Tensor:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    d^2 = ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrt(sigma1 sigma2)).

    With sigma1 = F F^T (Cholesky, or the symmetric square root when sigma1 is singular), sigma1 @ sigma2 is
    similar to the symmetric PSD matrix F^T sigma2 F, so tr(sqrt(sigma1 sigma2)) is the sum of the square
    roots of that matrix's eigenvalues: symmetric eigensolvers only (several times faster and stabler than
    the general `eigvals(sigma1 @ sigma2)` torchmetrics uses, and than scipy's `sqrtm`), with the tiny
    negative eigenvalues rounding leaves clamped to 0.

    Args:
        mu1, mu2: `(D,)` means.
        sigma1, sigma2: `(D, D)` covariances.
        ranks: upper bounds on the ranks of sigma1 and sigma2 where known (N - 1 for a covariance of N
            samples). With one well below D the trace is computed exactly in that covariance's range, an
            r-dimensional subspace, instead of in D dimensions: FID of a few hundred frames at D=2048 costs
            milliseconds instead of seconds.

    Returns:
        0-d float64 tensor, >= 0: rounding leaves identical sets a few 1e-14 below zero, which is clamped to 0.

    Raises:
        ValueError: when the shapes do not fit together, or a mean or covariance holds NaN or infinity.
    """
    _check_gaussian(mu1, sigma1, name="mu1/sigma1")
    _check_gaussian(mu2, sigma2, name="mu2/sigma2")
    if mu1.shape != mu2.shape:
        raise ValueError(f"mu2: expected the feature dimension of mu1 {tuple(mu1.shape)}, received {tuple(mu2.shape)}")
    mu1, sigma1, mu2, sigma2 = (t.to(torch.float64) for t in (mu1, sigma1, mu2, sigma2))
    mean_term = (mu1 - mu2).square().sum()
    distance = mean_term + sigma1.trace() + sigma2.trace() - 2.0 * _trace_sqrt_product(sigma1, sigma2, ranks)
    return distance.clamp(min=0.0)


# Extra random directions beyond the rank bound: makes the range capture robust to rounding.
_OVERSAMPLE = 16


def _trace_sqrt_product(sigma1: Tensor, sigma2: Tensor, ranks: tuple[int | None, int | None]) -> Tensor:
    """tr(sqrt(sigma1 sigma2)) for symmetric PSD float64 matrices."""
    dim = sigma1.shape[0]
    known = [(r, i) for i, r in enumerate(ranks) if r is not None]
    if known and min(known)[0] + _OVERSAMPLE < dim:
        rank, which = min(known)
        if which == 1:  # eig(AB) = eig(BA): put the low-rank matrix first
            sigma1, sigma2 = sigma2, sigma1
        # sigma1 = Q (Q^T sigma1 Q) Q^T exactly when Q's columns span range(sigma1), which sigma1 @ (random
        # directions) does; the nonzero eigenvalues of sigma1 sigma2 are then those of (Q^T sigma1 Q)(Q^T sigma2 Q).
        generator = torch.Generator().manual_seed(0)
        probe = torch.randn(dim, rank + _OVERSAMPLE, generator=generator, dtype=torch.float64).to(sigma1.device)
        basis, _ = torch.linalg.qr(sigma1 @ probe)
        sigma1, sigma2 = basis.T @ sigma1 @ basis, basis.T @ sigma2 @ basis
    factor = _psd_factor(sigma1)
    return torch.linalg.eigvalsh(factor.T @ sigma2 @ factor).clamp(min=0.0).sqrt().sum()


def _psd_factor(sigma: Tensor) -> Tensor:
    """F with F F^T = sigma, so F^T sigma2 F (symmetric PSD) has the eigenvalues of sigma sigma2.

    Cholesky when sigma is positive definite (a fraction of an eigendecomposition's cost), else the
    symmetric square root from `eigh` (singular covariances: fewer samples than dimensions, dead features).
    """
    lower, info = torch.linalg.cholesky_ex(sigma)
    if int(info) == 0:
        return lower
    eigenvalues, eigenvectors = torch.linalg.eigh(sigma)
    return (eigenvectors * eigenvalues.clamp(min=0.0).sqrt()) @ eigenvectors.T


def frechet_distance_from_features(features1: Tensor, features2: Tensor) -> Tensor:
    """Frechet distance between two feature sets `(N1, D)` and `(N2, D)` (unbiased covariances, N >= 2 each)."""
    stats = [_stats_of(f, name=n) for f, n in ((features1, "features1"), (features2, "features2"))]
    return _frechet_from_stats(stats[0], stats[1], names=("features1", "features2"))


def _frechet_from_stats(stats1: tuple[Tensor, Tensor, Tensor], stats2: tuple[Tensor, Tensor, Tensor], *,
                        names: tuple[str, str]) -> Tensor:
    """Frechet distance from two (sum, sum of outer products, count) triples: the one place both
    the functional and the streaming metrics compute it."""
    mu1, sigma1 = _mean_cov(*stats1, name=names[0])
    mu2, sigma2 = _mean_cov(*stats2, name=names[1])
    ranks = (int(stats1[2]) - 1, int(stats2[2]) - 1)
    return frechet_distance(mu1, sigma1, mu2, sigma2, ranks=ranks)


def _check_gaussian(mu: Tensor, sigma: Tensor, *, name: str) -> None:
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"{name}: expected a (D,) mean and a (D, D) covariance, received {tuple(mu.shape)} "
                         f"and {tuple(sigma.shape)}")
    _check_finite(mu, sigma, name=name, what="a finite mean and covariance")


def _check_finite(*tensors: Tensor, name: str, what: str) -> None:
    """NaN or infinity would otherwise surface as an eigensolver's "ill-conditioned" LinAlgError."""
    if not all(bool(torch.isfinite(t).all()) for t in tensors):
        raise ValueError(f"{name}: expected {what}, received NaN or infinity (check the "
                         "feature extractor: its input range, its weights, half-precision overflow)")


def _stats_of(features: Tensor, *, name: str) -> tuple[Tensor, Tensor, Tensor]:
    """(sum, sum of outer products, count) of `(N, D)` features, in float64."""
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty 2-D (N, D) feature tensor, received shape "
                         f"{tuple(features.shape)}")
    x = features.to(torch.float64)
    return x.sum(dim=0), x.T @ x, torch.tensor(x.shape[0], dtype=torch.float64, device=x.device)


def _mean_cov(total: Tensor, outer: Tensor, count: Tensor, *, name: str) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance from accumulated statistics (as numpy.cov and torchmetrics' FID)."""
    n = float(count)
    if n < 2:
        raise ValueError(f"{name}: expected at least 2 samples to estimate a covariance, received {int(n)}")
    # Any NaN or infinite feature makes these sums non-finite: one check here covers every update.
    _check_finite(total, outer, name=name, what="finite features")
    mean = total / n
    cov = (outer - n * torch.outer(mean, mean)) / (n - 1)
    return mean, cov


class FrechetDistance(Metric):
    """Streaming Frechet distance between a reference and a generated feature set.

    The base of `FID` and `FVD`, which override `update` to embed videos first; use it directly with `(N, D)`
    features from your own extractor.

    Args:
        num_features: the feature dimension D.
        reset_real_features: whether `reset()` also clears the reference statistics (False keeps them, so a
            fixed reference set is embedded once per run).
        **kwargs: passed to `torchmetrics.Metric`.

    Example:
        >>> metric = FrechetDistance(num_features=8)
        >>> metric.update(reference=torch.randn(100, 8))
        >>> metric.update(generated=torch.randn(100, 8) + 1)
        >>> float(metric.compute()) > 4
        True
    """

    higher_is_better = False
    is_differentiable = False
    full_state_update = False
    plot_lower_bound = 0.0
    ref_sum: Tensor
    ref_outer: Tensor
    ref_count: Tensor
    gen_sum: Tensor
    gen_outer: Tensor
    gen_count: Tensor

    def __init__(self, num_features: int, *, reset_real_features: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features: expected a positive int, received {num_features!r}")
        self.num_features = num_features
        self.reset_real_features = reset_real_features
        for prefix in ("ref", "gen"):
            self.add_state(f"{prefix}_sum", torch.zeros(num_features, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{prefix}_outer", torch.zeros(num_features, num_features, dtype=torch.float64),
                           dist_reduce_fx="sum")
            self.add_state(f"{prefix}_count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, generated: Tensor | None = None, reference: Tensor | None = None) -> None:
        """Add `(N, D)` features of generated samples, of reference samples, or both."""
        _require_one(generated, reference, name=type(self).__name__)
        if generated is not None:
            self._accumulate(generated, reference=False)
        if reference is not None:
            self._accumulate(reference, reference=True)

    def _accumulate(self, features: Tensor, *, reference: bool) -> None:
        name = "reference features" if reference else "generated features"
        if features.ndim != 2 or features.shape[1] != self.num_features:
            raise ValueError(f"{name}: expected shape (N, {self.num_features}), received {tuple(features.shape)}")
        total, outer, count = _stats_of(features.to(self.ref_sum.device), name=name)
        prefix = "ref" if reference else "gen"
        setattr(self, f"{prefix}_sum", getattr(self, f"{prefix}_sum") + total)
        setattr(self, f"{prefix}_outer", getattr(self, f"{prefix}_outer") + outer)
        setattr(self, f"{prefix}_count", getattr(self, f"{prefix}_count") + count)

    def compute(self) -> Tensor:
        """The Frechet distance between the two accumulated sets (0-d float64 tensor)."""
        return _frechet_from_stats((self.gen_sum, self.gen_outer, self.gen_count),
                                   (self.ref_sum, self.ref_outer, self.ref_count),
                                   names=("generated features", "reference features"))

    def reset(self) -> None:
        """Clear the generated statistics, and the reference ones unless `reset_real_features=False`."""
        kept = {} if self.reset_real_features else {
            key: getattr(self, key) for key in ("ref_sum", "ref_outer", "ref_count")}
        super().reset()
        for key, value in kept.items():
            setattr(self, key, value)


class VideoFrechetDistance(FrechetDistance):
    """A `FrechetDistance` over videos: `update(generated=..., reference=...)` embeds them with `_embed`.

    The shared half of `FID` and `FVD`; a subclass sets `self._model` and implements `_embed`.
    """

    def __init__(self, num_features: int, *, value_range: ValueRange = (0.0, 1.0),
                 reset_real_features: bool = True, **kwargs: Any) -> None:
        super().__init__(num_features, reset_real_features=reset_real_features, **kwargs)
        self.value_range = check_value_range(value_range)

    def update(self, generated: Tensor | None = None, reference: Tensor | None = None, *,
               prepared: bool = False) -> None:
        """Add generated videos, reference videos, or both: `(B, T, C, H, W)` or `(T, C, H, W)` each.

        Args:
            generated: uint8 or float videos in `value_range`, or None.
            reference: videos of the same kind (the sets may differ in size), or None.
            prepared: True when the videos are already what `prepare_videos` returns (float
                `(B, T, C, H, W)` in [0, 1]): the input checks are skipped. `VideoMetrics` prepares a batch
                once for all its metrics this way.
        """
        _require_one(generated, reference, name=type(self).__name__)
        for videos, name in ((generated, "generated"), (reference, "reference")):
            if videos is not None:
                if not prepared:
                    videos = prepare_videos(videos, name=name, value_range=self.value_range)
                self._accumulate(self._embed(videos, name=name), reference=name == "reference")

    def _embed(self, videos: Tensor, *, name: str) -> Tensor:
        """Features `(N, num_features)` of prepared videos."""
        raise NotImplementedError


def _require_one(generated: Tensor | None, reference: Tensor | None, *, name: str) -> None:
    if generated is None and reference is None:
        raise ValueError(f"{name}.update: expected generated=..., reference=... or both, received neither")
