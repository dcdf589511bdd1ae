"""The committed toy evaluator: accuracy on fresh renders and the scores' behaviour."""

import numpy as np
import pytest

from swiftbrush.errors import InvalidArgumentError
from swiftbrush.toy.evaluator import EVALUATOR_DIR, Evaluator, frechet_distance
from swiftbrush.toy.grammar import all_captions
from swiftbrush.toy.render import render_batch

pytestmark = pytest.mark.skipif(not (EVALUATOR_DIR / "model.safetensors").is_file(), reason="toy evaluator not trained")


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


def test_prompts_outside_the_grammar_are_refused(evaluator):
    with pytest.raises(InvalidArgumentError, match="not a toy caption"):
        evaluator.alignment(np.zeros((1, 64, 64, 3), np.uint8), ["a cat"])
