"""Policy files, presets, and decisions."""

from __future__ import annotations

import pytest

from safeset.errors import BadInputError, UsageError
from safeset.model import ItemResult, Match, Status
from safeset.policy import Policy, preset_names


def _result(status=Status.OK, quality=100, matches=()):
    pdq = "ab" * 32 if quality is not None else None
    return ItemResult(
        row_id="s:0", shard="s", index=0, key="k", status=status, pdq=pdq, pdq_quality=quality, matches=list(matches)
    )


def test_presets_load_and_differ():
    assert {"default", "strict", "review-only"} <= set(preset_names())
    default, strict = Policy.preset("default"), Policy.preset("strict")
    assert default.sha256 != strict.sha256
    with pytest.raises(UsageError, match="no policy preset"):
        Policy.preset("../default")


def test_default_policy_decisions():
    policy = Policy.preset("default")
    clean = _result()
    policy.decide(clean, 50)
    assert (clean.decision, clean.reasons) == ("keep", [])

    hit = _result(matches=[Match("iwf", "md5", "00" * 16), Match("c3p", "pdq", "ab" * 32, 12)])
    policy.decide(hit, 50)
    assert hit.decision == "remove" and hit.reasons == ["match:iwf:md5", "match:c3p:pdq"]

    flat = _result(quality=20)
    policy.decide(flat, 50)
    assert flat.decision == "keep" and flat.reasons == ["unchecked:pdq_low_quality"]

    missing = _result(status=Status.NO_IMAGE, quality=None)
    policy.decide(missing, 50)
    assert missing.decision == "keep" and missing.reasons == ["unchecked:no_image"]


def test_policy_file_per_bank_actions_and_unchecked(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(
        'name = "mine"\n[match]\ndefault = "remove"\n[match.banks]\nwatch = "review"\n'
        '[unchecked]\ndecode_failed = "review"\nno_image = "remove"\n'
    )
    policy = Policy.load(path)
    assert policy.name == "mine"
    watched = _result(matches=[Match("watch", "pdq", "ab" * 32, 3)])
    policy.decide(watched, 50)
    assert watched.decision == "review"
    both = _result(matches=[Match("watch", "pdq", "ab" * 32, 3), Match("iwf", "md5", "00" * 16)])
    policy.decide(both, 50)
    assert both.decision == "remove"  # the most severe action wins
    broken = _result(status=Status.DECODE_FAILED, quality=None)
    policy.decide(broken, 50)
    assert broken.decision == "review" and broken.reasons == ["unchecked:decode_failed"]
    gone = _result(status=Status.NO_IMAGE, quality=None)
    policy.decide(gone, 50)
    assert gone.decision == "remove"
    assert policy.to_dict()["match"]["banks"] == {"watch": "review"}


@pytest.mark.parametrize(
    "text, message",
    [
        ("[match]\ndefault = 'delete'\n", "match.default = 'delete': expected keep, remove or review"),
        ("[unchecked]\nblurry = 'keep'\n", "unknown condition(s) in [unchecked]: blurry"),
        ("[matches]\n", "unknown policy section(s): matches"),
        ("[match\n", "not valid TOML"),
    ],
)
def test_bad_policy_files_name_the_file(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(BadInputError) as info:
        Policy.load(path)
    assert str(path) in str(info.value) and message in str(info.value)
