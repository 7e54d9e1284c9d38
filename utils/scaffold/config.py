"""nanoGPT-style configuration: a script's hyperparameters are plain literals at its top; this turns
them into command-line flags of the same names (``LEARNING_RATE`` -> ``--learning-rate``), keeps
their types, checks their ranges, applies a named preset to every flag the user did not type, and
returns the final values as one namespace that is saved beside the results and inside checkpoints.

A typed flag always beats the preset, in every spelling argparse accepts: ``--learning-rate 0.05``
and ``--learning-rate=0.05``; abbreviations (``--learning 0.05``) are refused, since a preset could
not tell them apart from an untyped flag.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable

# A hyperparameter is NAME: (default, help) or NAME: (default, help, check); check is a key of CHECKS.
CHECKS: dict[str, tuple[Callable[[float], bool], str]] = {
    "positive": (lambda v: v > 0, "> 0"),
    "non_negative": (lambda v: v >= 0, ">= 0"),
    "fraction": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "factor_or_off": (lambda v: v == 0 or v > 1, "0 (off) or > 1"),
}


def new_parser(doc: str | None) -> argparse.ArgumentParser:
    """The parser every script starts from: its docstring as help, no abbreviated flags, and ``--debug``.

    ``--debug`` is read by the error boundary (:mod:`utils.scaffold.boundary`) before parsing; it is declared
    here so every script accepts it and lists it in ``--help``. It stays out of the namespace unless typed,
    so config.json and checkpoints are as they were without it.
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="on an error, show its traceback as well (also: SAM_BTCV_DEBUG=1)")
    return parser


def checked(kind: type, check: str) -> Callable[[str], Any]:
    """An argparse ``type`` that converts to ``kind`` and refuses values outside ``check``."""
    test, words = CHECKS[check]

    def convert(text: str):
        try:
            value = kind(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from exc
        if not test(value):
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {words}")
        return value

    convert.__name__ = kind.__name__  # argparse names the type in its messages
    return convert


def add_hyperparameters(parser: argparse.ArgumentParser, defaults: dict[str, tuple]) -> None:
    """Add one flag per ``NAME: (default, help[, check])``; booleans get --name / --no-name.

    Numbers are checked (``check`` defaults to non-negative): a negative batch size is an argparse
    error, not a silent run that takes no step. A string's ``check`` may be a tuple of the allowed values.
    """
    group = parser.add_argument_group("hyperparameters (defaults are the constants at the top of the script)")
    for name, spec in defaults.items():
        default, help_text = spec[0], spec[1]
        flag = "--" + name.lower().replace("_", "-")
        dest = name.lower()
        if isinstance(default, bool):
            group.add_argument(flag, dest=dest, default=default, action=argparse.BooleanOptionalAction, help=help_text)
        elif isinstance(default, (int, float)):
            check = spec[2] if len(spec) > 2 else "non_negative"
            group.add_argument(flag, dest=dest, default=default, type=checked(type(default), check),
                               help=f"{help_text} (default: {default}; {CHECKS[check][1]})")
        elif len(spec) > 2 and isinstance(spec[2], tuple):
            group.add_argument(flag, dest=dest, default=default, choices=spec[2],
                               help=f"{help_text} (default: {default})")
        else:
            group.add_argument(flag, dest=dest, default=default, type=str, help=f"{help_text} (default: {default})")


def typed_destinations(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """Destinations of the flags on the command line, however they were spelled.

    Parses ``argv`` a second time with every default suppressed: what is left in the namespace was typed.
    """
    saved = [(action, action.default) for action in parser._actions]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        typed = vars(parser.parse_args(argv))
    finally:
        for action, default in saved:
            action.default = default
    return set(typed)


def comma_list(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    """A check for :func:`parse_with_presets`: 'a,b' -> ['a', 'b'], each one of ``choices`` (ValueError otherwise)."""

    def parse(text: str) -> list[str]:
        names = [t.strip() for t in text.split(",") if t.strip()]
        if not names or set(names) - set(choices):
            raise ValueError(f"{text!r}: choose from {', '.join(choices)} (comma-separated)")
        return names

    return parse


def one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    """A check for :func:`parse_with_presets`: the value must be one of ``choices`` (ValueError otherwise)."""

    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"{text!r}: choose from {', '.join(choices)}")
        return text

    return parse


def parse_with_presets(parser: argparse.ArgumentParser, argv: list[str] | None,
                       presets: dict[str, dict[str, Any]] | None = None,
                       checks: dict[str, Callable[[str], Any]] | None = None) -> argparse.Namespace:
    """Parse ``argv``; with ``presets``, overwrite every flag the user did not type with ``args.preset``'s value.

    ``checks``: {destination: parse function} for text flags whose value is a list or a name
    (``{"prompts": parse_prompt_types}``); a value the function refuses (ValueError) is an argparse error
    (usage, exit 2) like any other bad flag value. The text itself is kept. ``args.typed_flags`` lists the
    flags that were typed (recorded in config.json).
    """
    args = parser.parse_args(argv)
    typed = typed_destinations(parser, argv)
    if presets is not None:
        if args.preset not in presets:
            parser.error(f"--preset must be one of {', '.join(presets)}, got {args.preset!r}")
        for key, value in presets[args.preset].items():
            if key not in typed:
                setattr(args, key, value)
    for dest, check in (checks or {}).items():
        try:
            check(getattr(args, dest))
        except ValueError as exc:
            flag = "--" + dest.replace("_", "-")
            parser.error(str(exc) if str(exc).startswith(flag) else f"argument {flag}: {exc}")
    args.typed_flags = sorted(typed)
    return args
