"""Distribution metrics, convergence, bootstrap intervals and the real floor, checked against closed forms."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffuscope.checks.errors import UsageError
from diffuscope.data import load_dataset
from diffuscope.metrics import (
    Classifier,
    ClassifierConfig,
    ClassifierInfo,
    ClassifierNet,
    MetricOptions,
    accuracy_interval,
    bootstrap_ci,
    compute_metrics,
    convergence,
    density_coverage,
    embed,
    evaluate,
    fd_interval,
    frechet_distance,
    frechet_distance_from_stats,
    kernel_distance,
    kid_interval,
    metric_options,
    paired_difference_ci,
    precision_recall,
    prompt_accuracy,
    real_floor,
    split_real,
)
from diffuscope.metrics.stats import _distinct_pair_mean


def gaussian(n, mean, var, seed):
    rng = np.random.default_rng(seed)
    return np.asarray(mean) + rng.normal(size=(n, len(mean))) * np.sqrt(var)


@pytest.fixture(scope="module")
def random_classifier():
    """An untrained (random-feature) classifier for the 8x8 digits: enough to exercise the plumbing."""
    torch.manual_seed(0)
    cfg = ClassifierConfig(channels=1, image_size=8, num_classes=10)
    info = ClassifierInfo(cfg, "digits", tuple(str(i) for i in range(10)), float("nan"), (float("nan"),) * 10, 0, 0)
    return Classifier(ClassifierNet(cfg), info)


@pytest.fixture(scope="module")
def digits_test():
    return load_dataset("digits", split="test")


# --- Frechet distance -----------------------------------------------------------------------------------------

def test_fd_of_identical_sets_is_zero():
    x = gaussian(400, np.zeros(16), np.linspace(0.5, 2, 16), 0)
    assert abs(frechet_distance(x, x)) < 1e-6
    assert abs(frechet_distance(torch.from_numpy(x), torch.from_numpy(x), method="eigh")) < 1e-6


def test_fd_matches_closed_form_for_two_gaussians():
    m1, m2 = np.array([0.0, 1.0, -1.0, 0.5]), np.array([0.5, 0.0, -1.0, 2.0])
    v1, v2 = np.array([1.0, 2.0, 0.5, 1.0]), np.array([0.25, 2.0, 2.0, 3.0])
    # ||m1 - m2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)); diagonal S: sum (sqrt(v1) - sqrt(v2))^2
    exact = ((m1 - m2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet_distance_from_stats(m1, np.diag(v1), m2, np.diag(v2)) == pytest.approx(exact, rel=1e-9)
    fd = frechet_distance(gaussian(20000, m1, v1, 1), gaussian(20000, m2, v2, 2))
    assert fd == pytest.approx(exact, rel=0.03)


def test_fd_sqrtm_and_eigh_agree_on_full_and_near_singular_covariances():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mu = np.zeros(6)
    assert frechet_distance_from_stats(mu, s1, mu, s2) == pytest.approx(
        frechet_distance_from_stats(mu, s1, mu, s2, method="eigh"), rel=1e-8)
    x, y = rng.normal(size=(20, 64)), rng.normal(size=(20, 64)) + 0.2  # N < D: rank-deficient covariances
    fd = frechet_distance(x, y)
    assert np.isfinite(fd) and fd == pytest.approx(frechet_distance(x, y, method="eigh"), rel=1e-4)


# --- KID ------------------------------------------------------------------------------------------------------

def test_kid_identical_sets_small_and_shift_large():
    x = gaussian(300, np.zeros(8), np.ones(8), 0)
    same, std = kernel_distance(x, x)
    shifted, _ = kernel_distance(x, x + 1.0)
    assert std == 0.0  # one subset covers both sets: computed once
    assert abs(same) < 0.01 * shifted


def test_kid_is_unbiased_for_two_samples_of_one_distribution():
    values = [kernel_distance(gaussian(60, np.zeros(4), np.ones(4), 2 * i),
                              gaussian(60, np.zeros(4), np.ones(4), 2 * i + 1))[0] for i in range(60)]
    mean, sem = np.mean(values), np.std(values) / np.sqrt(len(values))
    assert abs(mean) < 3 * sem
    # the biased V-statistic (diagonals kept) is clearly positive on the same draws: the test can fail
    x, y = gaussian(60, np.zeros(4), np.ones(4), 0), gaussian(60, np.zeros(4), np.ones(4), 1)
    k = lambda a, b: (a @ b.T / 4 + 1) ** 3  # noqa: E731
    biased = k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()
    assert biased > kernel_distance(x, y)[0] + 3 * sem


def test_kid_subsets_are_seeded():
    x, y = gaussian(150, np.zeros(4), np.ones(4), 0), gaussian(120, np.ones(4), np.ones(4), 1)
    a = kernel_distance(x, y, num_subsets=10, subset_size=50, seed=1)
    assert a == kernel_distance(x, y, num_subsets=10, subset_size=50, seed=1)
    assert a[1] > 0 and a[0] > 0


# --- precision / recall, density / coverage --------------------------------------------------------------------

def test_manifold_identical_sets():
    x = gaussian(300, np.zeros(8), np.ones(8), 0)
    assert precision_recall(x, x) == (1.0, 1.0)
    density, coverage = density_coverage(x, x)
    assert coverage == 1.0 and 0.8 < density < 1.2


def test_manifold_shift_and_mode_dropping():
    real = gaussian(400, np.zeros(4), np.ones(4), 0)
    p, r = precision_recall(real, gaussian(400, np.full(4, 3.0), np.ones(4), 1))
    assert p < 0.2 and r < 0.2
    # generated set covering only half of the real one: precision stays high, recall and coverage drop
    fake = gaussian(2000, np.zeros(4), np.ones(4), 2)
    half = fake[fake[:, 0] > 0][:400]
    p, r = precision_recall(real, half)
    _, coverage = density_coverage(real, half)
    assert p > 0.9 and r < 0.75 and coverage < 0.75
    # per image: which generated images fall in the real manifold (their mean is precision), and which real ones
    # in the generated manifold (recall); the real images on the dropped side are the uncovered ones
    from diffuscope.metrics.manifold import manifold_membership

    fake_in_real, real_in_fake = manifold_membership(real, half)
    assert fake_in_real.shape == (len(half),) and real_in_fake.shape == (len(real),)
    assert (fake_in_real.mean(), real_in_fake.mean()) == (p, r)
    assert real_in_fake[real[:, 0] < -1].mean() < 0.2 < 0.9 < real_in_fake[real[:, 0] > 1].mean()


# --- accuracy, intervals -------------------------------------------------------------------------------------

def test_prompt_accuracy_per_class():
    acc = prompt_accuracy(torch.tensor([0, 1, 1, 2, 0]), torch.tensor([0, 1, 2, 2, 1]), 4)
    assert acc.accuracy == pytest.approx(3 / 5)
    assert acc.per_class[:3] == (1.0, 0.5, 0.5) and np.isnan(acc.per_class[3])
    assert acc.counts == (1, 2, 2, 0)
    with pytest.raises(ValueError):
        prompt_accuracy([0, 1], [0, 9], 4)


def test_bootstrap_contains_estimate_and_narrows_with_n():
    rng = np.random.default_rng(0)
    widths = {}
    for n in (100, 1600):
        acc = accuracy_interval(rng.random(n) < 0.8, n_resamples=200, seed=0)
        x, y = gaussian(n, np.zeros(4), np.ones(4), 1), gaussian(n, np.full(4, 0.3), np.ones(4), 2)
        fd = fd_interval(x, y, n_resamples=60, seed=0)
        kid = kid_interval(x, y, n_resamples=60, seed=0)
        for ci in (acc, fd, kid):
            assert ci.contains(ci.estimate), ci
        assert kid.estimate == pytest.approx(kernel_distance(x, y, subset_size=n)[0], rel=1e-9)
        widths[n] = (acc.width, fd.width, kid.width)
    assert all(w_big < 0.5 * w_small for w_small, w_big in zip(widths[100], widths[1600]))


def test_bootstrap_is_seeded_and_duplicate_aware():
    x = np.arange(10.0)
    assert bootstrap_ci(np.mean, x, seed=3) == bootstrap_ci(np.mean, x, seed=3)
    k = np.arange(9.0).reshape(3, 3)
    k = k + k.T
    assert _distinct_pair_mean(k, np.ones(3)) == pytest.approx((k.sum() - np.trace(k)) / 6)
    # resample (0, 0, 2): pairs of distinct originals are (0,2) x2 and (2,0) x2
    assert _distinct_pair_mean(k, np.array([2.0, 0.0, 1.0])) == pytest.approx(k[0, 2])



def test_paired_difference_is_far_tighter_than_the_two_sets_own_intervals():
    """Two sets from the same noise (row i of both shares most of its randomness) differ by a small shift: the
    paired interval finds it, while the sets' own intervals overlap."""
    rng = np.random.default_rng(0)
    shared = rng.normal(size=(256, 4)) * 3
    a, b = shared + 0.15, shared + rng.normal(size=(256, 4)) * 0.05
    ia, ib = bootstrap_ci(np.mean, a[:, 0], seed=0), bootstrap_ci(np.mean, b[:, 0], seed=0)
    assert ia.low < ib.high and ib.low < ia.high  # unpaired: indistinguishable
    gap = paired_difference_ci(np.mean, a[:, 0], b[:, 0], seed=0)
    assert gap.estimate == pytest.approx(a[:, 0].mean() - b[:, 0].mean()) and 0 < gap.low <= gap.estimate <= gap.high
    assert paired_difference_ci(np.mean, a[:, 0], b[:, 0], seed=0) == gap  # seeded
    ref = rng.normal(size=(256, 4)) * 3  # FD against a shared reference, resampled on its own
    fd_gap = paired_difference_ci(frechet_distance, shared * 1.3, shared, ref, n_resamples=100, seed=0)
    assert fd_gap.estimate == pytest.approx(frechet_distance(shared * 1.3, ref) - frechet_distance(shared, ref))
    assert fd_gap.low > 0  # the wider set is measurably further from the reference
    with pytest.raises(ValueError, match="equal length"):
        paired_difference_ci(np.mean, a[:10, 0], b[:9, 0])

# --- convergence ----------------------------------------------------------------------------------------------

def test_convergence_pixel_and_feature_rmse(random_classifier):
    ref = torch.rand(4, 1, 8, 8) * 2 - 1
    same = convergence(ref, ref, random_classifier)
    assert same.mean_pixel_rmse == 0 and same.mean_feature_rmse == 0
    off = ref.clone()
    off[1] += 0.1
    c = convergence(off, ref, random_classifier)
    assert c.pixel_rmse[0] == 0 and c.pixel_rmse[1] == pytest.approx(0.1, rel=1e-6)
    assert c.mean_pixel_rmse == pytest.approx(0.1 / 4, rel=1e-6)
    assert c.feature_rmse[0] == 0 and c.feature_rmse[1] > 0
    assert convergence(off, ref).feature_rmse is None
    with pytest.raises(ValueError):
        convergence(off[:3], ref)


# --- FD on classifier features -------------------------------------------------------------------------------

def _fd_closed_form(x: torch.Tensor, y: torch.Tensor) -> float:
    """||mu_x - mu_y||^2 + Tr(S_x) + Tr(S_y) - 2 sum_i sqrt(lambda_i(S_x S_y)), in float64 torch (independent of
    the scipy code under test; S_x S_y is similar to a PSD matrix, so its eigenvalues are real and >= 0)."""
    x, y = x.double(), y.double()
    sx, sy = torch.cov(x.T), torch.cov(y.T)
    root = torch.linalg.eigvals(sx @ sy).real.clamp(min=0).sqrt().sum()
    return float((x.mean(0) - y.mean(0)).square().sum() + sx.trace() + sy.trace() - 2 * root)


def test_fd_grows_as_the_squared_shift_of_a_feature_set(random_classifier, digits_test):
    """Shifting every feature vector by delta leaves the covariance and moves the mean: FD = ||delta||^2 exactly,
    on the classifier's own features of real digits; evaluate() reports it."""
    features, _ = random_classifier.embed(digits_test.images[:200])
    base = evaluate(features, features, options=MetricOptions(n_resamples=0)).fd
    assert abs(base) < 1e-6
    direction = torch.randn(features.shape[1], generator=torch.Generator().manual_seed(0))
    for scale in (0.1, 0.5, 2.0):
        delta = direction * scale
        fd = evaluate(features + delta, features, options=MetricOptions(n_resamples=0)).fd
        assert fd == pytest.approx(float(delta.double().square().sum()), rel=1e-3)
    # compute_metrics, real_floor and the evaluator pass MetricOptions by name; an unknown name names the valid ones
    assert metric_options({"n_resamples": 0, "seed": 2}) == MetricOptions(n_resamples=0, seed=2)
    with pytest.raises(UsageError, match=r"unknown metric option 'k' \(valid: k_pr, k_dc, kid_subsets, "
                                         r"kid_subset_size, n_resamples, level, seed\)"):
        metric_options({"k": 3})


# --- the report and the real floor ----------------------------------------------------------------------------

def test_split_real_is_disjoint_balanced_and_refuses_too_many(digits_test):
    split = split_real(digits_test, 50, seed=0)
    assert split.comparison == "held-out vs held-out"
    a = split.reference.images.flatten(1)
    b = split.stand_in.images.flatten(1)
    assert torch.cdist(a, b).min() > 0  # no image in both sets (digits' test images are distinct)
    assert np.bincount(split.reference.labels.numpy(), minlength=10).min() >= 4
    assert torch.equal(split_real(digits_test, 50, seed=0).stand_in.images, split.stand_in.images)
    with pytest.raises(UsageError, match="too large for a real-vs-real floor"):
        split_real(digits_test, 120)
    train = load_dataset("digits", split="train")
    assert split_real(digits_test, 120, train=train).comparison == "train vs held-out"
    big = split_real(digits_test, 200, train=train)  # the reference holds every held-out image it can (one rule:
    assert len(big.stand_in) == 200 and len(big.reference) <= len(digits_test)  # metrics.floor.real_sets)


def test_real_floor_and_report(random_classifier, digits_test):
    floor = real_floor(random_classifier, digits_test, 60, seed=1, n_resamples=20)
    assert floor.comparison == "held-out vs held-out" and floor.n_generated == floor.n_reference == 60
    # the floor is the report of the split's stand-in against its reference: FD from the closed form on their
    # features, accuracy = the classifier's accuracy on the stand-in's true labels, per class as well
    split = split_real(digits_test, 60, seed=1)
    stand_in, stand_in_logits = random_classifier.embed(split.stand_in.images)
    reference, _ = random_classifier.embed(split.reference.images)
    assert floor.fd == pytest.approx(_fd_closed_form(stand_in, reference), rel=1e-4)
    assert floor.fd_ci[0] <= floor.fd <= floor.fd_ci[1]
    correct = stand_in_logits.argmax(1) == split.stand_in.labels
    assert floor.accuracy == pytest.approx(float(correct.float().mean()))
    per_class = [float(correct[split.stand_in.labels == c].float().mean()) for c in range(10)]
    assert floor.per_class_accuracy == pytest.approx(per_class)
    json.dumps(floor.to_dict(), allow_nan=False)
    # the generated set = the reference itself: zero distance, perfect precision / recall / coverage
    ref = embed(random_classifier, split.reference.images)
    same = compute_metrics(split.reference.images, None, random_classifier, ref, n_resamples=0)
    assert abs(same.fd) < 1e-6 and same.precision == same.recall == same.coverage == 1.0
    assert same.accuracy is None and same.fd_ci is None
    with pytest.raises(ValueError):
        evaluate(ref.features[:4], ref)  # too few for k=5
