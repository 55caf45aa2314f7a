"""Every option and argument of every ``hookdock`` command says what it is for."""

from __future__ import annotations

import argparse

from receiver.cli import _parser


def _undocumented(parser: argparse.ArgumentParser, where: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += _undocumented(sub, f"{where} {name}")
        elif not isinstance(action, argparse._HelpAction) and not action.help:
            missing.append(f"{where} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_option_has_help() -> None:
    assert _undocumented(_parser(), "hookdock") == []
