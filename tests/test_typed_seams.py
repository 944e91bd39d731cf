"""Issue 28, part 5: typed seams and no hidden state -- a bounded prompt cache, a text-encoder registry resolved at
first use (nothing registers itself on import), the ``Denoiser`` protocol and the judges' ``Judge`` protocol."""

from __future__ import annotations

import subprocess
import sys

import torch

from diffuscope.core.conditioning import TEXT_ENCODERS, TextConditioner, make_conditioner, text_encoder_factory


def counting_encoder(calls: list):
    def encode(prompts):
        calls.extend(prompts)
        rows = [torch.full((2, 4), float(sum(map(ord, p)) % 97)) for p in prompts]
        tokens = torch.stack(rows)
        return tokens, torch.ones(len(prompts), 2, dtype=torch.bool), tokens.mean(1)

    return encode


def test_prompt_cache_never_exceeds_its_bound_and_gives_identical_encodings():
    calls: list[str] = []
    conditioner = TextConditioner(counting_encoder(calls), "toy", cache_size=3)
    first = conditioner.encode(["red cat"])
    for i in range(20):
        conditioner.encode([f"prompt {i}"])
        assert len(conditioner._cache) <= 3
    again = conditioner.encode(["red cat"])  # evicted: encoded again, to the same tensors
    assert calls.count("red cat") == 2
    torch.testing.assert_close(again.tokens, first.tokens, rtol=0, atol=0)
    torch.testing.assert_close(again.pooled, first.pooled, rtol=0, atol=0)
    conditioner.encode(["red cat"])  # recently used: cached
    assert calls.count("red cat") == 2


def test_least_recently_used_prompt_goes_first():
    calls: list[str] = []
    conditioner = TextConditioner(counting_encoder(calls), "toy", cache_size=2)
    conditioner.encode(["a"])
    conditioner.encode(["b"])
    conditioner.encode(["a"])  # a is now the most recent: c evicts b
    conditioner.encode(["c"])
    conditioner.encode(["a"])
    assert calls == ["a", "b", "c"]


def test_text_encoder_registry_is_resolved_at_first_use_not_filled_on_import():
    before = dict(TEXT_ENCODERS)
    import diffuscope.text

    assert before == TEXT_ENCODERS  # importing the encoders' package registers nothing
    assert isinstance(TEXT_ENCODERS["all-MiniLM-L6-v2"], str)  # "module:factory", imported when first named
    assert text_encoder_factory("all-MiniLM-L6-v2") is diffuscope.text.minilm_conditioner
    code = ("import sys; from diffuscope.core.conditioning import make_conditioner; "
            "c = make_conditioner({'kind': 'text', 'encoder': 'all-MiniLM-L6-v2'}); "
            "print(c.name, 'tokenizers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["all-MiniLM-L6-v2", "False"]  # named, built, and still nothing heavy imported


def test_unknown_text_encoder_is_a_usage_error_naming_the_valid_ones():
    import pytest

    from diffuscope.checks.errors import UsageError

    with pytest.raises(UsageError, match="all-MiniLM-L6-v2"):
        make_conditioner({"kind": "text", "encoder": "nope"})


# --- the Denoiser protocol ----------------------------------------------------------------------------------------


def test_denoiser_protocol_types_the_model_guidance_and_sampler_seams():
    from typing import get_type_hints

    from diffuscope.core.contract import DenoiseFn, Denoiser
    from diffuscope.core.guidance import CFGDenoiser
    from diffuscope.core.model import DiffusionModel
    from diffuscope.samplers import SAMPLERS

    assert get_type_hints(DiffusionModel)["denoiser"] is Denoiser
    assert get_type_hints(CFGDenoiser.__init__)["denoiser"] is DenoiseFn
    for spec in SAMPLERS.values():
        assert get_type_hints(spec.fn)["denoiser"] is DenoiseFn, spec.name


def test_models_and_wrappers_satisfy_the_denoiser_protocol():
    from diffuscope.core.contract import DenoiseFn, Denoiser
    from diffuscope.models.load import load_model

    model = load_model("mnist")
    assert isinstance(model.denoiser, Denoiser)
    assert isinstance(model.guided(2.0), DenoiseFn)
    assert not isinstance(model.guided(2.0), Denoiser)  # guidance keeps the call, not the schedule
    bare = model.bare(lambda x, sigma, cond=None: x, model.schedule, model.sample_shape)
    assert isinstance(bare.denoiser, Denoiser) and bare.schedule is model.schedule


# --- judges --------------------------------------------------------------------------------------------------------


def test_judges_implement_the_judge_protocol_and_say_what_they_measure():
    from pathlib import Path

    import pytest

    import diffuscope
    from diffuscope.checks.errors import UsageError
    from diffuscope.metrics.classifier import load_classifier
    from diffuscope.metrics.evaluation import Evaluator
    from diffuscope.metrics.feature_judge import FeatureJudge
    from diffuscope.metrics.judge import Judge, Judgement
    from diffuscope.metrics.retrieval import RetrievalJudge

    images = torch.rand(6, 3, 16, 16) * 2 - 1
    retrieval = RetrievalJudge(images, [f"p{i}" for i in range(6)], "toy")
    features = FeatureJudge(images, "toy", lambda x: x.flatten(1))
    classifier = load_classifier(Path(diffuscope.__file__).parent / "models" / "mnist")
    expected = {retrieval: Judgement.RETRIEVAL, features: Judgement.FEATURES, classifier: Judgement.CLASSES}
    for judge, measures in expected.items():
        assert isinstance(judge, Judge), type(judge).__name__
        assert judge.measures is measures
        ev = Evaluator(judge, None, "toy", 16, 3, judge.class_names)
        assert ev.is_retrieval == (measures is Judgement.RETRIEVAL)
        assert ev.is_features_only == (not measures.predicts)
        assert ev.describe() is not None
    assert retrieval.predict(images).tolist() == list(range(6))
    with pytest.raises(UsageError, match="predict nothing"):
        features.predict(images)
    assert len(classifier.class_names) == 10 and classifier.describe()["held_out_accuracy"] > 0.9


def test_no_judge_is_chosen_by_a_kind_string():
    import re
    from pathlib import Path

    import diffuscope

    root = Path(diffuscope.__file__).parent
    pattern = re.compile(r"""getattr\([^)]*["']kind["']""")
    hits = [str(p.relative_to(root)) for p in root.rglob("*.py") if pattern.search(p.read_text())]
    assert hits == []
