"""Placeholder: filled in by its owner. configure_parser(sub) adds the subcommand and sets handler=."""
from __future__ import annotations


def configure_parser(sub) -> None:
    return None
