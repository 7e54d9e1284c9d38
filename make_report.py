"""Assemble results/REPORT.md from what the task scripts wrote into results/ (and nothing else).

    python make_report.py [--results results]

Tables 1-4 in the study report's shapes, the training curves and figures, and for every task the
data, split, slice count, model, checkpoint digest, preset, seed, device and date that produced its
numbers (and the precision it ran at). A missing piece is named with the command that makes it. The output depends only on the
files in results/, so running it twice gives the same report.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from utils.core.errors import ResultsError  # noqa: E402
from utils.core.io import write_text  # noqa: E402
from utils.report.results_files import ResultsFiles  # noqa: E402
from utils.report.sections import SECTIONS, phantom_warning  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from utils.scaffold.config import new_parser

    parser = new_parser(__doc__)
    parser.add_argument("--results", type=Path, default=ROOT / "results", help="results folder (default results/)")
    return parser.parse_args(argv)


def build_report(results: Path | ResultsFiles) -> str:
    """REPORT.md's text from the files under ``results`` (a damaged one marks its section; see ``damaged``)."""
    files = results if isinstance(results, ResultsFiles) else ResultsFiles(results)
    out = ["# SAM on BTCV: study report", ""] + phantom_warning(files)
    for heading, section in SECTIONS:
        try:
            lines = section(files)
        except ResultsError as exc:
            lines = [f"_**This section could not be written.** {exc}._", ""]
        if heading and lines:  # a section with nothing to say is left out (the wall times need run_study.py)
            lines = [f"## {heading}", ""] + lines
        out += lines
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.results.is_dir():
        raise ResultsError(f"{args.results}: no results folder; run the task scripts (or make reproduce) first")
    files = ResultsFiles(args.results)
    path = write_text(args.results / "REPORT.md", build_report(files))
    print(f"wrote {path}")
    if files.damaged:
        raise ResultsError(f"{'; '.join(map(str, files.damaged.values()))} (the rest of {path} was written; "
                           "the section that needs it is marked)") from next(iter(files.damaged.values()))
    return 0


if __name__ == "__main__":
    from utils.scaffold.boundary import run_script  # the one error boundary (--debug: tracebacks)

    sys.exit(run_script(main))
