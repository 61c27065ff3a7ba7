"""Policy files, presets, and decisions."""

from __future__ import annotations

import numpy as np
import pytest

from safeset.errors import BadInputError, UsageError
from safeset.model import Match, Status
from safeset.policy import Policy, preset_names


class _Row:
    """A row as the policy sees it: its matches, status, and whether its image was too flat."""

    def __init__(self, status=Status.OK, quality=100, matches=()):
        self.matched = [(m.bank, m.signal_type) for m in matches]
        self.status = str(status)
        self.low = quality is None and status is Status.OK or (quality is not None and quality < 50)


def _result(status=Status.OK, quality=100, matches=()):
    return _Row(status, quality, matches)


def _decide(policy, row: _Row) -> None:
    row.decision, row.reasons = policy.judge(row.matched, row.status, row.low)


def test_presets_load_and_differ():
    assert {"default", "strict", "review-only"} <= set(preset_names())
    default, strict = Policy.preset("default"), Policy.preset("strict")
    assert default.sha256 != strict.sha256
    with pytest.raises(UsageError, match="no policy preset"):
        Policy.preset("../default")


def test_default_policy_decisions():
    policy = Policy.preset("default")
    clean = _result()
    _decide(policy, clean)
    assert (clean.decision, clean.reasons) == ("keep", [])

    hit = _result(matches=[Match("iwf", "md5", "00" * 16), Match("c3p", "pdq", "ab" * 32, 12)])
    _decide(policy, hit)
    assert hit.decision == "remove" and hit.reasons == ["match:iwf:md5", "match:c3p:pdq"]

    flat = _result(quality=20)
    _decide(policy, flat)
    assert flat.decision == "keep" and flat.reasons == ["unchecked:pdq_low_quality"]

    missing = _result(status=Status.NO_IMAGE, quality=None)
    _decide(policy, missing)
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
    _decide(policy, watched)
    assert watched.decision == "review"
    both = _result(matches=[Match("watch", "pdq", "ab" * 32, 3), Match("iwf", "md5", "00" * 16)])
    _decide(policy, both)
    assert both.decision == "remove"  # the most severe action wins
    broken = _result(status=Status.DECODE_FAILED, quality=None)
    _decide(policy, broken)
    assert broken.decision == "review" and broken.reasons == ["unchecked:decode_failed"]
    gone = _result(status=Status.NO_IMAGE, quality=None)
    _decide(policy, gone)
    assert gone.decision == "remove"
    assert policy.to_dict()["match"]["banks"] == {"watch": "review"}


@pytest.mark.parametrize(
    "text, message",
    [
        ("[match]\ndefault = 'delete'\n", "match.default = 'delete': expected keep, remove or review"),
        ("[unchecked]\nblurry = 'keep'\n", "unknown condition(s) in [unchecked]: blurry"),
        ("[matches]\n", "unknown policy section(s): matches"),
        ("[match\n", "not valid TOML"),
        ("match = 'remove'\n", "[match] must be a table of names to actions, not str"),
        ("[match]\nbanks = ['a']\n", "[match.banks] must be a table of names to actions, not list"),
        ("[unchecked]\nno_image = 1\n", "unchecked.no_image = 1: expected keep, remove or review"),
        ("name = 3\n", "name must be a string"),
    ],
)
def test_bad_policy_files_name_the_file(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(BadInputError) as info:
        Policy.load(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_a_policy_that_is_not_utf8_or_names_a_missing_bank(tmp_path, home):
    from helpers import run_cli, write_lines

    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(BadInputError, match=r"latin\.toml, line 1: not UTF-8 text"):
        Policy.load(latin)
    write_lines(tmp_path / "md5.txt", ["0" * 31 + "1"])
    assert run_cli("bank", "add", "iwf", tmp_path / "md5.txt", "--type", "md5", home=home).exit_code == 0
    (tmp_path / "t.csv").write_text("url\nhttps://a.example/1.jpg\n")
    typo = tmp_path / "typo.toml"
    typo.write_text('[match.banks]\niwff = "review"\n')  # a typo: iwf's matches would be removed unseen
    result = run_cli("scan", tmp_path / "t.csv", "--out", tmp_path / "out", "--policy", typo, "-q", home=home)
    assert result.exit_code == 2 and "names bank(s) iwff, which the store does not hold" in result.stderr
    bad = run_cli("scan", tmp_path / "t.csv", "--out", tmp_path / "out", "--policy", latin, "-q", home=home)
    assert bad.exit_code == 3 and "latin.toml, line 1: not UTF-8 text" in bad.stderr
    # a rule for a bank the scan does not use (not chosen here) applies to nothing: said so
    assert run_cli("bank", "add", "other", tmp_path / "md5.txt", "--type", "md5", home=home).exit_code == 0
    unused = tmp_path / "unused.toml"
    unused.write_text('[match.banks]\nother = "review"\n')
    args = ("scan", tmp_path / "t.csv", "--out", tmp_path / "out3", "--policy", unused, "--bank", "iwf")
    result = run_cli(*args, home=home)
    assert result.exit_code == 0, result.output
    assert "rules for bank(s) other, which this scan did not use" in result.stdout


def test_many_rows_are_decided_as_each_would_be():
    """`decide_rows` (a results table's rows at once) gives each row what `judge` gives it."""
    policy = Policy.preset("default")
    names = ["ok", "no_image", "decode_failed"]
    codes = np.array([0, 0, 1, 2, 0, 1, 0])
    low = np.array([False, True, False, False, False, False, False])
    matched = {4: [("iwf", "md5")], 5: [("watch", "pdq"), ("iwf", "md5")]}
    decisions, reasons, chosen = policy.decide_rows(codes, names, low, matched)
    for row in range(len(codes)):
        expected = policy.judge(matched.get(row, ()), names[codes[row]], bool(low[row]))
        assert (decisions[chosen[row]], reasons[chosen[row]]) == expected
    assert len(decisions) == 6  # rows alike share one outcome

    # the preset's rule on an opt-out written in the file fires where the signal says so
    (rule,) = policy.rules
    optout = (np.array([0, 0, 0, 0, 1, 0, 1.0]), np.array([False, False, False, False, True, False, True]))
    decisions, reasons, chosen = policy.decide_rows(codes, names, low, matched, {"optout_in_file": optout})
    for row in range(len(codes)):
        fired = [rule] if optout[1][row] else []
        expected = policy.judge(matched.get(row, ()), names[codes[row]], bool(low[row]), fired)
        assert (decisions[chosen[row]], reasons[chosen[row]]) == expected
    assert reasons[chosen[6]] == ["rule:optout-in-file"] and decisions[chosen[6]] == "remove"
