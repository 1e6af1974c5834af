"""Frechet distance: against scipy's sqrtm reference, the textbook case, and streaming against one-shot."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from opusclip_track.metrics.frechet import FrechetDistance, frechet_distance, frechet_distance_from_features


def _scipy_frechet(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """The pytorch-fid / StyleGAN-V formula: scipy sqrtm of the product."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)  # `disp=False` is gone from newer scipy
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


def _random_spd(rng: np.random.Generator, dim: int) -> np.ndarray:
    a = rng.standard_normal((dim, 2 * dim))
    return a @ a.T / (2 * dim) + 0.1 * np.eye(dim)


def test_matches_scipy_sqrtm_on_random_covariances() -> None:
    rng = np.random.default_rng(0)
    for dim in (8, 64, 200):
        mu1, mu2 = rng.standard_normal(dim), rng.standard_normal(dim) * 0.5
        s1, s2 = _random_spd(rng, dim), _random_spd(rng, dim)
        ours = frechet_distance(*(torch.from_numpy(x) for x in (mu1, s1, mu2, s2)))
        assert ours.dtype == torch.float64
        assert float(ours) == pytest.approx(_scipy_frechet(mu1, s1, mu2, s2), rel=1e-9)


def test_textbook_case_means_zero_and_one_identity_covariance_2048d() -> None:
    dim = 2048
    eye = torch.eye(dim, dtype=torch.float64)
    value = frechet_distance(torch.zeros(dim), eye, torch.ones(dim), eye)
    assert float(value) == pytest.approx(2048.0, abs=1e-6)


@pytest.mark.parametrize("n", [40, 300])  # fewer samples than dimensions (subspace route) and more (full route)
def test_from_features_matches_scipy_on_sample_covariances(n: int) -> None:
    rng = np.random.default_rng(n)
    dim = 128
    f1 = rng.standard_normal((n, dim)) @ rng.standard_normal((dim, dim)) * 0.3
    f2 = rng.standard_normal((n + 7, dim)) + 0.2
    expected = _scipy_frechet(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))
    ours = frechet_distance_from_features(torch.from_numpy(f1), torch.from_numpy(f2))
    assert float(ours) == pytest.approx(expected, rel=1e-7)


def test_subspace_route_equals_full_route() -> None:
    rng = np.random.default_rng(1)
    f1, f2 = (torch.from_numpy(rng.standard_normal((30, 256)) * s) for s in (1.0, 2.0))
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = torch.cov(f1.T), torch.cov(f2.T)
    full = frechet_distance(mu1, s1, mu2, s2)
    # The full route takes square roots of the ~1e-14 rounding noise in the 226 null directions of these
    # rank-29 covariances; that noise, not the subspace route, bounds the agreement.
    for ranks in ((29, 29), (29, None), (None, 29)):
        assert float(frechet_distance(mu1, s1, mu2, s2, ranks=ranks)) == pytest.approx(float(full), rel=1e-7)


def test_identical_sets_give_zero_and_shifted_sets_the_squared_shift() -> None:
    feats = torch.randn(500, 32, dtype=torch.float64)
    assert abs(float(frechet_distance_from_features(feats, feats))) < 1e-9
    shifted = frechet_distance_from_features(feats + 0.5, feats)
    assert float(shifted) == pytest.approx(32 * 0.25, rel=1e-9)


def test_streaming_equals_one_shot_in_any_batching() -> None:
    torch.manual_seed(0)
    ref, gen = torch.randn(90, 16), torch.randn(70, 16) * 1.5 + 0.3
    expected = frechet_distance_from_features(gen, ref)
    metric = FrechetDistance(num_features=16)
    for chunk in ref.split(17):
        metric.update(reference=chunk)
    for chunk in gen.split(9):
        metric.update(generated=chunk)
    assert float(metric.compute()) == pytest.approx(float(expected), rel=1e-10)
    metric.reset()
    metric.update(generated=gen, reference=ref)
    assert float(metric.compute()) == pytest.approx(float(expected), rel=1e-10)


def test_reset_keeps_reference_statistics_when_asked() -> None:
    ref, gen = torch.randn(50, 8), torch.randn(50, 8) + 1.0
    metric = FrechetDistance(num_features=8, reset_real_features=False)
    metric.update(reference=ref, generated=torch.randn(50, 8))
    metric.reset()
    metric.update(generated=gen)
    assert float(metric.compute()) == pytest.approx(float(frechet_distance_from_features(gen, ref)), rel=1e-10)
    clearing = FrechetDistance(num_features=8)
    clearing.update(reference=ref, generated=gen)
    clearing.reset()
    clearing.update(generated=gen)
    with pytest.raises(ValueError, match="reference features: expected at least 2 samples"):
        clearing.compute()


def test_bad_input_is_named() -> None:
    metric = FrechetDistance(num_features=4)
    with pytest.raises(ValueError, match=r"generated features: expected shape \(N, 4\), received \(3, 5\)"):
        metric.update(generated=torch.randn(3, 5))
    with pytest.raises(ValueError, match="expected generated=..., reference=... or both"):
        metric.update()
    with pytest.raises(ValueError, match="num_features: expected a positive int"):
        FrechetDistance(num_features=0)
    with pytest.raises(ValueError, match=r"mu2: expected the feature dimension of mu1 \(3,\), received \(4,\)"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4))
    with pytest.raises(ValueError, match="features1: expected at least 2 samples"):
        frechet_distance_from_features(torch.randn(1, 4), torch.randn(5, 4))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_infinite_features_are_named_not_an_eigensolver_failure(bad: float) -> None:
    features = torch.randn(20, 4, generator=torch.Generator().manual_seed(0))
    broken = features.clone()
    broken[3, 1] = bad
    with pytest.raises(ValueError, match=r"^features2: expected finite features, received NaN or infinity"):
        frechet_distance_from_features(features, broken)
    metric = FrechetDistance(num_features=4)
    metric.update(reference=features)
    metric.update(generated=broken[:10])
    metric.update(generated=features[10:])  # a later clean batch does not wash it out
    with pytest.raises(ValueError, match=r"^generated features: expected finite features, received NaN"):
        metric.compute()
    with pytest.raises(ValueError, match=r"^mu1/sigma1: expected a finite mean and covariance, received NaN"):
        frechet_distance(torch.full((4,), bad), torch.eye(4), torch.zeros(4), torch.eye(4))


def test_identical_sets_give_zero_never_a_tiny_negative_distance() -> None:
    # Rounding left 11 of these 40 sets at -1.4e-14 to -5.7e-14 before the clamp.
    for seed in range(40):
        features = torch.randn(50, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3 + 5
        assert float(frechet_distance_from_features(features, features)) >= 0.0
        metric = FrechetDistance(num_features=8)
        metric.update(generated=features, reference=features)
        assert float(metric.compute()) >= 0.0
