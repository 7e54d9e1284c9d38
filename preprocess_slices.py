"""Cut BTCV CT volumes (or the suite's synthetic phantom) into the 2-D slice store.

    python preprocess_slices.py --phantom                       # embedded default: make the phantom, then the store
    python preprocess_slices.py --data-root ~/BTCV --out data/slices_btcv

Only axial slices with at least one organ are kept (the study's "data separation"). Each volume goes
through MONAI (LoadImage, EnsureChannelFirst, Orientation to RAS, ScaleIntensityRange with a CT
window). Re-running with the same inputs and settings reuses the store; other settings make a new one.

The 3-D stage (segmentation_3d.py) needs every slice through the organs, not only organ-bearing ones,
and organs that begin and end inside the stack: a whole upper abdomen (~250 mm, 50 slices 4.95 mm apart):

    python preprocess_slices.py --phantom --data-root data/phantom_3d --phantom-cases 35 \\
        --phantom-extent abdomen --phantom-slices 50 --slice-margin 2 --out data/slices_3d \\
        --results results/task3d/store

The phantom's default stack (--phantom-extent band) is the 90 mm organ band from the kidneys' middle to the
adrenals' tops, through which most organs run; --phantom-slices slices are spread evenly over the extent.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent

# ---------------------------------------------------------------------------------------------
# Settings (each is also a flag)
WINDOW_HU = (-175.0, 250.0)  # MONAI's BTCV tutorials' soft-tissue window; TransUNet/SAMed use -125..275
PHANTOM_VOLUMES = 30  # BTCV's 30 labelled volumes: 24 training + 6 validation (cases 35-40)
PHANTOM_SLICES = 2  # axial slices per phantom volume (45 mm apart): 60 slices, 603 samples, every organ in both
# splits; 4 until 2026-12-04 (120 slices, 1,127 samples), cut to bring make reproduce nearer its 15 minutes
# (docs/speed-and-memory.md)
PHANTOM_SIZE = 160  # in-plane voxels (2.4 mm each); LiteMedSAM resizes to 256 anyway
SEED = 0
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from utils.scaffold.config import new_parser

    parser = new_parser(__doc__)
    parser.add_argument("--data-root", type=Path, default=None,
                        help="BTCV folder (dataset_0.json, RawData/, img+label/ or imagesTr+labelsTr/). "
                             "With --phantom: where the phantom is written (default data/phantom)")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "slices", help="slice store folder (default data/slices)")
    parser.add_argument("--phantom", action="store_true", help="generate the synthetic BTCV-format phantom first")
    parser.add_argument("--phantom-volumes", type=int, default=PHANTOM_VOLUMES, help=f"phantom volumes (default {PHANTOM_VOLUMES})")
    parser.add_argument("--phantom-slices", type=int, default=PHANTOM_SLICES, help=f"axial slices per phantom volume (default {PHANTOM_SLICES})")
    parser.add_argument("--phantom-extent", choices=("band", "abdomen"), default="band",
                        help="the phantom's cranio-caudal stack: band (default, the 2-D study's: 90 mm through the "
                             "organs) or abdomen (~250 mm, below the kidneys' lower poles to above the liver dome: "
                             "every organ but the aorta, IVC and esophagus begins and ends inside it; the 3-D stage's)")
    parser.add_argument("--phantom-cases", default="",
                        help="comma-separated phantom case ids to write instead of the first --phantom-volumes "
                             "(e.g. 35: one validation volume; BTCV's validation cases are 35-40)")
    parser.add_argument("--slice-margin", type=int, default=None, metavar="N",
                        help="keep every slice from N below each volume's lowest organ slice to N above its "
                             "highest, slices without any organ included (what the 3-D stage needs; a store "
                             "setting, so it gets its own key). Default: only slices with an organ (Tasks 1-3)")
    parser.add_argument("--phantom-size", type=int, default=PHANTOM_SIZE, help=f"phantom in-plane size in voxels (default {PHANTOM_SIZE})")
    parser.add_argument("--window", type=float, nargs=2, default=WINDOW_HU, metavar=("LO", "HI"),
                        help=f"CT window in HU scaled to [0, 1] (default {WINDOW_HU[0]:g} {WINDOW_HU[1]:g})")
    parser.add_argument("--seed", type=int, default=SEED, help="phantom seed (default 0)")
    parser.add_argument("--results", type=Path, default=ROOT / "results", help="results folder (default results/)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def pick_montage_slices(records, n: int = 8) -> list[int]:
    """Up to ``n`` slices, one per volume, chosen greedily so that together they show every organ
    present in the store (each pick adds the most organs not yet shown; ties: the fuller slice)."""
    shown: set[int] = set()
    used_cases: set[str] = set()
    picks: list[int] = []
    while len(picks) < n:
        candidates = [r for r in records if r.case_id not in used_cases]
        if not candidates:
            break
        best = max(candidates, key=lambda r: (len(set(r.organs) - shown), len(r.organs), -r.index))
        picks.append(best.index)
        used_cases.add(best.case_id)
        shown |= set(best.organs)
    return picks


def montage(store, path: Path) -> Path:
    from utils.core.organs import organ_title
    from utils.report.plots import save_montage

    picks = pick_montage_slices(store.records)
    slices = []
    for index in picks:
        image, label = store.load(index)
        record = store.records[index]
        slices.append((image, label, f"case {record.case_id}, z={record.z} ({record.split}), {len(record.organs)} organs"))
    missing = sorted(set(range(1, 14)) - {o for i in picks for o in store.records[i].organs})
    note = f" (not shown: {', '.join(organ_title(o) for o in missing)})" if missing else ""
    return save_montage(slices, path, f"{store.description}: slices with label overlays{note}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from utils.core.io import write_json
    from utils.data.dataset import DataError
    from utils.data.slice_store import SliceStore, build_store
    from utils.scaffold.session import fail

    started = time.perf_counter()
    data_root = args.data_root
    if args.phantom:
        from utils.data.phantom import BAND_MM, EXTENTS, PhantomConfig, write_phantom_dataset

        data_root = data_root or ROOT / "data" / "phantom"
        try:
            cases = tuple(int(c) for c in args.phantom_cases.split(",") if c.strip())
            extent = EXTENTS[args.phantom_extent]
            length_mm = BAND_MM * (extent[1] - extent[0])
            config = PhantomConfig(shape=(args.phantom_size, args.phantom_size, args.phantom_slices),
                                   spacing=(2.4, 2.4, length_mm / args.phantom_slices), seed=args.seed,
                                   n_volumes=args.phantom_volumes, cases=cases, extent=extent)
        except ValueError as exc:
            print(f"error: --phantom-cases {args.phantom_cases!r}: {exc}", file=sys.stderr)
            return 2
        write_phantom_dataset(data_root, config, progress=not args.no_progress)
        print(f"phantom: {len(config.case_ids)} volumes of {config.shape} voxels in {data_root}")
    elif data_root is None:
        print("error: pass --data-root BTCV_DIR, or --phantom for the suite's synthetic dataset", file=sys.stderr)
        return 2
    phantom_seconds = time.perf_counter() - started
    try:
        store_path, summary = build_store(data_root, args.out, window=tuple(args.window), progress=not args.no_progress,
                                          slice_margin=args.slice_margin)
    except (DataError, ValueError) as exc:
        raise fail(str(exc)) from exc
    store = SliceStore(store_path)
    seconds = time.perf_counter() - started
    size_mb = sum(p.stat().st_size for p in store_path.rglob("*") if p.is_file()) / 2**20
    out_dir = args.results / "preprocess"
    picture = montage(store, out_dir / ("phantom_montage.png" if args.phantom else "slices_montage.png"))
    write_json(out_dir / "summary.json", {
        "data": store.description, "data_root": str(Path(data_root).resolve()), "store": str(store_path),
        "window_hu": list(args.window), "seed": args.seed, "summary": summary, "store_mb": round(size_mb, 2),
        "seconds": {"phantom": round(phantom_seconds, 2), "total": round(seconds, 2)},
    })
    write_json(out_dir / "config.json", {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()})
    state = "reused" if summary["reused"] else "built"
    print(f"slice store {state}: {store_path}")
    without = f", {summary['slices_without_organ']} without any organ" if summary.get("slices_without_organ") else ""
    print(f"  {summary['volumes']} volumes ({summary['layout']}), {summary['slices']} slices{without} "
          f"(train {summary['slices_per_split']['train']}, val {summary['slices_per_split']['val']}), "
          f"{summary['organ_samples']} organ samples, {size_mb:.1f} MB, {seconds:.1f} s")
    if summary["skipped_empty_volumes"]:
        print(f"  skipped {len(summary['skipped_empty_volumes'])} volume(s) with no organ label")
    print(f"  montage: {picture}")
    return 0


if __name__ == "__main__":
    from utils.scaffold.boundary import run_script  # the one error boundary (--debug: tracebacks)

    sys.exit(run_script(main))
