"""Docs that cannot rot: the README's walkthrough and Python example run here, every command has
help text, and `safeset demo` (what `make demo` runs) does what the README says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from helpers import run_cli

from safeset.cli import cli
from safeset.demo import build_demo_dataset

README = Path(__file__).resolve().parent.parent / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def _commands(group: click.Group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


@pytest.mark.parametrize("path", [p for p, _ in _commands(cli)], ids=" ".join)
def test_every_command_has_help(path):
    command = dict(_commands(cli))[path]
    assert (command.help or "").strip(), f"safeset {' '.join(path)} has no help text"
    result = run_cli(*path, "--help")
    assert result.exit_code == 0 and "Usage:" in result.stdout
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"option {param.opts} of safeset {' '.join(path)} has no help"


def test_readme_commands_and_api_example_run(tmp_path):
    build_demo_dataset(tmp_path / "build" / "demo")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("SAFESET_HOME", None)
    for block in blocks("sh"):
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True)
        assert proc.returncode == 0, proc.stderr.decode()
    assert (tmp_path / "build" / "walkthrough" / "out" / "report.html").is_file()

    # the API example scans with the demo's banks, as `safeset demo` registers them
    from safeset.banks import BankStore

    demo = tmp_path / "build" / "demo"
    store = BankStore(demo / "home")
    store.add("demo-md5", demo / "lists" / "demo-md5.txt", type_name="md5")
    store.add("demo-pdq", demo / "lists" / "demo-pdq.txt")
    (python_block,) = blocks("python")
    script = tmp_path / "example.py"  # as a user saves it: a script, whose workers must not re-run it
    script.write_text(python_block)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().strip() == "unsupported_media"


def test_readme_policy_example_is_a_valid_policy(tmp_path):
    from safeset.policy import Policy

    whole, rules, copies = blocks("toml")
    assert Policy.from_toml_text(copies, source="README").copies == "review"
    policy = Policy.from_toml_text(whole, source="README")
    assert policy.match_banks == {"watchlist": "review"}
    assert [r.name for r in Policy.from_toml_text(rules, source="README").rules] == [
        "relaion-research",
        "scores-to-review",
    ]


def test_demo_command_shows_exact_perceptual_and_video_removals(tmp_path):
    result = run_cli("demo", tmp_path / "demo", "--workers", "2")
    assert result.exit_code == 0, result.output
    assert "match:demo-md5:md5: 5" in result.stdout
    # the 5 exact copies, 4 resized ones and the clip that shows a listed tile for a moment
    assert "match:demo-pdq:pdq: 10" in result.stdout
    assert "match:demo-urls:url: 2" in result.stdout
    assert "match:demo-vpdq:vpdq: 1" in result.stdout  # the listed clip, re-encoded
    assert "rocket.jpg: SpaceX" in result.stdout  # credits
    assert (tmp_path / "demo" / "out" / "report.html").is_file()
