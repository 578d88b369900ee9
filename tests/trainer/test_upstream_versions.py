"""Building a PEPOTrainer checks the installed trl / transformers / accelerate (pepo.versions)."""

from __future__ import annotations

import warnings

from pepo import versions
from pepo.versions import UpstreamChangedWarning


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
