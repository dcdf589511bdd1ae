"""The committed toy evaluator: accuracy on fresh renders and the scores' behaviour."""

import warnings

import numpy as np
import pytest

from swiftbrush.errors import InvalidArgumentError
from swiftbrush.toy.evaluator import EVALUATOR_DIR, Evaluator, frechet_distance
from swiftbrush.toy.grammar import all_captions
from swiftbrush.toy.render import render_batch



@pytest.fixture(scope="module")
def evaluator():
    return Evaluator.load()


def test_accuracy_on_fresh_renders_is_at_least_98_percent(evaluator):
    captions = all_captions() * 10
    _, pred = evaluator.classify(render_batch(captions, seed=987_654))
    truth = np.array([c.labels for c in captions])
    for i, name in enumerate(("colour", "shape", "background")):
        assert (pred[:, i] == truth[:, i]).mean() >= 0.98, name


def test_renders_score_high_and_mismatched_prompts_score_low(evaluator):
    captions = all_captions() * 4
    prompts = [c.text for c in captions]
    images = render_batch(captions, seed=5)
    good = evaluator.score(images, prompts)
    assert good.alignment >= 0.95
    shuffled = prompts[1:] + prompts[:1]  # every image paired with another caption
    assert evaluator.alignment(images, shuffled) < 0.1
    noise = np.random.default_rng(0).integers(0, 256, images.shape, dtype=np.uint8)
    assert evaluator.fd(noise, prompts) > 10 * max(good.fd, 1.0)


def test_frechet_distance_of_identical_sets_is_zero_and_grows_with_shift():
    a = np.random.default_rng(0).normal(size=(500, 8))
    assert abs(frechet_distance(a, a)) < 1e-6
    assert frechet_distance(a, a + 1.0) == pytest.approx(8.0, rel=1e-6)


def test_frechet_distance_with_differing_covariances_and_no_deprecated_scipy_calls():
    """b = 2a: cov_b = 4 cov_a, so sqrt(cov_a cov_b) = 2 cov_a and FD = |mu_a|^2 + tr(cov_a).

    Warnings are errors here: SciPy 1.16 deprecated sqrtm's `disp=` and 1.18 removed it, which
    broke the toy scores on a machine with a newer SciPy; a deprecated call fails this test first.
    """
    a = np.random.default_rng(1).normal(loc=0.5, size=(400, 6)) @ np.random.default_rng(2).normal(size=(6, 6))
    expected = float((a.mean(0) ** 2).sum() + np.trace(np.cov(a, rowvar=False)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert frechet_distance(a, 2.0 * a) == pytest.approx(expected, rel=1e-6)


def test_prompts_outside_the_grammar_are_refused(evaluator):
    with pytest.raises(InvalidArgumentError, match="not a toy caption"):
        evaluator.alignment(np.zeros((1, 64, 64, 3), np.uint8), ["a cat"])
