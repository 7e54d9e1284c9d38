"""Write the prompt file a person would give segment_volume.py, made from a labelled volume: per organ the
3-D box of segmentation_3d.py's box3d protocol (the tight box on the organ's key slice, the slice of largest
area, and its first and last slice), in the CT file's voxel indices.

    python prompts_from_labels.py --image CT.nii.gz --label LABELS.nii.gz --out prompts.json
    python segment_volume.py --image CT.nii.gz --prompts prompts.json --score-against LABELS.nii.gz

For demonstrations and checks only (make reproduce runs it on phantom case 35, then segment_volume.py with
the labels withheld, and scores the result afterwards: it equals box3d's). A person would draw the boxes
instead; the file format is in segment_volume.py --help. --organs picks some organs (default: every organ
in the label map).
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from utils.scaffold.config import new_parser  # noqa: E402


def parse_args(argv: list[str] | None = None):
    parser = new_parser(__doc__)
    parser.add_argument("--image", type=Path, required=True, help="the CT (NIfTI)")
    parser.add_argument("--label", type=Path, required=True, help="its label map (NIfTI, BTCV labels 0..13, same grid)")
    parser.add_argument("--out", type=Path, required=True, help="the prompt file to write (JSON)")
    parser.add_argument("--organs", default="", help="comma-separated BTCV organ names (default: every organ present)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import numpy as np

    from utils.core.io import check_output_path, write_json
    from utils.core.organs import ORGANS
    from utils.data.ct import load_ct, load_label_display
    from utils.data.dataset import DataError
    from utils.inference.prompt_file import box3d_prompt_spec

    check_output_path(args.out, {"--image": args.image, "--label": args.label})  # before any work
    ct = load_ct(args.image)
    label = load_label_display(args.label, ct)
    wanted = [o.strip() for o in args.organs.split(",") if o.strip()]
    unknown = sorted(set(wanted) - set(ORGANS))
    if unknown:
        raise DataError(f"--organs {','.join(unknown)}: not BTCV organs; choose from {', '.join(ORGANS)}")
    if wanted:
        label = np.where(np.isin(label, [ORGANS.index(o) + 1 for o in wanted]), label, 0).astype(np.uint8)
    spec = box3d_prompt_spec(label, ct)
    if not spec["organs"]:
        raise DataError(f"{args.label}: no organ label to make a prompt from" + (f" among {args.organs}" if wanted else ""))
    write_json(args.out, spec)
    print(f"wrote {args.out}: 3-D boxes for {len(spec['organs'])} organ(s) ({', '.join(e['organ'] for e in spec['organs'])})")
    return 0


if __name__ == "__main__":
    from utils.scaffold.boundary import run_script  # the one error boundary (--debug: tracebacks)

    sys.exit(run_script(main))
