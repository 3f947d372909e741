"""The CLI protects itself: every command and subcommand answers --help."""

import argparse
import subprocess
import sys

import pytest

from lanternlm.cli import build_parser, main


def _all_command_paths(parser, prefix=()):
    paths = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.extend(_all_command_paths(sub, prefix + (name,)))
    return paths


PATHS = _all_command_paths(build_parser())


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "lantern")
def test_every_command_answers_help(path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*path, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: lantern" in out


def test_console_script_lists_commands():
    out = subprocess.run([sys.executable, "-m", "lanternlm.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "commands" in out
