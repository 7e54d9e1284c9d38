"""The one error boundary every script's entry goes through:

    if __name__ == "__main__":
        sys.exit(run_script(main))

A :class:`~utils.core.errors.SuiteError` raised anywhere in the run (bad data, cache, checkpoint, run or
results file: conditions the user can fix) ends as ONE line ``error: <message>`` on stderr and exit
status 1, with no traceback: the message names the file and the fix. ``--debug`` (every parser made by
:func:`utils.scaffold.config.new_parser` accepts it) or ``SAM_BTCV_DEBUG=1`` in the environment prints the
traceback above that line. Any other exception is a bug and keeps its traceback; ``SystemExit`` (argparse's
exit 2 for a bad flag value, ``--help``) passes through unchanged.
"""
from __future__ import annotations

import os
import sys
import traceback
from typing import Callable

from utils.core.errors import SuiteError

DEBUG_FLAG = "--debug"
DEBUG_ENV = "SAM_BTCV_DEBUG"


def debug_requested(argv: list[str] | None = None) -> bool:
    """True when ``argv`` (default: the command line) holds ``--debug`` before any ``--``, or the environment
    sets SAM_BTCV_DEBUG to anything but '' or '0'."""
    words = sys.argv[1:] if argv is None else [str(a) for a in argv]
    words = words[: words.index("--")] if "--" in words else words
    return DEBUG_FLAG in words or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def report(error: BaseException, debug: bool = False) -> None:
    """Print a SuiteError as the boundary does: ``error: message`` on stderr (after its traceback with ``debug``)."""
    if debug:
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    print(f"error: {error}", file=sys.stderr, flush=True)


def run_script(main: Callable[..., int | None], argv: list[str] | None = None) -> int:
    """Run ``main(argv)`` (``main()`` when argv is None) and return its exit status; a SuiteError becomes 1.

    With ``--debug`` the environment variable is set too while ``main`` runs, so the scripts a run starts
    (``run_study.py``'s torchrun stages) show their tracebacks as well; it is put back afterwards.
    """
    debug = debug_requested(argv)
    before = os.environ.get(DEBUG_ENV)
    if debug:
        os.environ[DEBUG_ENV] = "1"
    try:
        code = main() if argv is None else main(argv)
    except SuiteError as exc:
        report(exc, debug)
        return 1
    finally:  # a run called in-process (run_study's stages, tests) leaves the environment as it found it
        if debug and before is None:
            os.environ.pop(DEBUG_ENV, None)
        elif debug:
            os.environ[DEBUG_ENV] = before
    return 0 if code is None else code
