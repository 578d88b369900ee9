"""Building a PEPOTrainer checks the installed trl / transformers / accelerate (pepo.versions)."""

from __future__ import annotations

import warnings

import pytest
from trl import GRPOTrainer

from pepo import versions
from pepo.versions import UnsupportedUpstreamError, UpstreamChangedWarning


def test_building_a_trainer_warns_once_outside_the_tested_range(make_trainer, monkeypatch):
    monkeypatch.setattr(versions, "_warned", set())
    tested = versions._installed
    monkeypatch.setattr(versions, "_installed", lambda name: "1.17.0" if name == "trl" else tested(name))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        make_trainer()
        make_trainer()
    found = [str(w.message) for w in record if issubclass(w.category, UpstreamChangedWarning)]
    assert len(found) == 1
    assert f"trl 1.17.0 (tested {versions.TESTED_RANGES['trl']})" in found[0]


def test_a_tested_setup_builds_without_a_version_warning(make_trainer, monkeypatch):
    monkeypatch.setattr(versions, "_warned", set())
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer = make_trainer()
    assert not [w for w in record if issubclass(w.category, UpstreamChangedWarning)]
    assert all(hasattr(trainer, name) for name in versions.TRL_ATTRIBUTES)


@pytest.fixture
def grpo_init_calls(monkeypatch):
    """Counts GRPOTrainer.__init__ calls: a refused TRL is refused before its model work."""
    calls = []
    original = GRPOTrainer.__init__

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GRPOTrainer, "__init__", counted)
    return calls


def test_an_overridden_trl_method_with_another_signature_is_refused(make_trainer, monkeypatch, grpo_init_calls):
    def reordered(self, model, input_ids, attention_mask, logits_to_keep, compute_entropy=False, batch_size=None):
        raise AssertionError("never called")

    monkeypatch.setattr(GRPOTrainer, "_get_per_token_logps_and_entropies", reordered)
    with pytest.raises(UnsupportedUpstreamError, match=r"^GRPOTrainer\._get_per_token_logps_and_entropies takes "
                       r"\(self, model, input_ids, attention_mask, logits_to_keep, compute_entropy, batch_size\), "
                       r"pepo overrides it as \(self, model, [^\n]*install a tested trl \(docs/patches\.md\)$"):
        make_trainer(weighting="pepo")
    assert not grpo_init_calls


def test_a_missing_trl_method_is_refused(make_trainer, monkeypatch, grpo_init_calls):
    monkeypatch.delattr(GRPOTrainer, "_calculate_rewards")
    with pytest.raises(UnsupportedUpstreamError, match=r"^GRPOTrainer\._calculate_rewards is gone \(pepo overrides "
                       r"it\); pepo was written for trl >=1\.16,<1\.17[^\n]*$"):
        make_trainer(weighting="none")
    assert not grpo_init_calls
