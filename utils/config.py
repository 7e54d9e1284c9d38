"""nanoGPT-style configuration: a script's hyperparameters are plain literals at its top; this turns
them into command-line flags of the same names (``LEARNING_RATE`` -> ``--learning-rate``), keeps
their types, and returns the final values as one dict that is saved beside the results and inside
checkpoints."""
from __future__ import annotations

import argparse
from typing import Any


def add_hyperparameters(parser: argparse.ArgumentParser, defaults: dict[str, tuple[Any, str]]) -> None:
    """Add one flag per ``NAME: (default, help)``; booleans get --name / --no-name."""
    group = parser.add_argument_group("hyperparameters (defaults are the constants at the top of the script)")
    for name, (default, help_text) in defaults.items():
        flag = "--" + name.lower().replace("_", "-")
        dest = name.lower()
        if isinstance(default, bool):
            group.add_argument(flag, dest=dest, default=default, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            kind = type(default) if default is not None else str
            group.add_argument(flag, dest=dest, default=default, type=kind, help=f"{help_text} (default: {default})")


def apply_preset(args: argparse.Namespace, presets: dict[str, dict[str, Any]], explicit: set[str]) -> None:
    """Overwrite ``args`` with the chosen ``args.preset`` values, except flags the user typed."""
    chosen = presets[args.preset]
    for key, value in chosen.items():
        if key not in explicit:
            setattr(args, key, value)


def explicit_flags(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """Destinations of the flags present on the command line (so a preset never overrides them)."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    typed = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    found = set()
    for action in parser._actions:
        if any(opt in typed or opt.replace("--", "--no-", 1) in typed for opt in action.option_strings):
            found.add(action.dest)
    return found
