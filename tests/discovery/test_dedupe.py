"""Duplicate detection in a campaign: the same function, or the same training (gradients x k > 0)."""

import pytest

from discovery.config import CampaignConfig, ExecutionConfig
from discovery.seams import Seams
from objectives import fingerprint as fpmod

SCALED = "import torch\ndef f(rho, beta):\n    z = beta * rho\n    return {k} * ((z - 0.5) ** 2 + 0.1 * torch.sigmoid(-z))\n"


def _seams():
    return Seams(fingerprint=fpmod.fingerprint, fingerprint_from_dict=fpmod.Fingerprint.from_dict,
                 find_duplicate=fpmod.find_duplicate)


def test_a_rescaled_candidate_is_a_training_duplicate_but_not_a_function_duplicate():
    seams = _seams()
    first, second = fpmod.fingerprint(SCALED.format(k=100)), fpmod.fingerprint(SCALED.format(k=75))
    existing = [(7, first.to_dict())]
    assert seams.duplicate_of(second, existing, up_to="function") == (None, "")
    assert seams.duplicate_of(second, existing, up_to="training") == (7, "same training")


def test_the_same_function_is_reported_as_such():
    seams = _seams()
    dpo = fpmod.fingerprint("dpo")
    rho_form = fpmod.fingerprint("import torch.nn.functional as F\ndef f(rho, beta):\n    return F.softplus(-beta * rho)\n")
    assert seams.duplicate_of(rho_form, [(1, dpo.to_dict())], up_to="training") == (1, "same function")


def test_dedupe_setting_is_checked():
    assert CampaignConfig().execution.dedupe == "training"
    with pytest.raises(ValueError, match="dedupe"):
        ExecutionConfig(dedupe="values")
