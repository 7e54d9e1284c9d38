"""Table 3's supervised baselines, measured: MONAI's 2-D U-Net or ResU-Net trained on the slice store.

    python train_baseline.py --arch unet --preset quick        # phantom store, about a minute on 2 CPU cores
    python train_baseline.py --arch resunet --slices data/slices_btcv   # paper preset, GPU
    python train_baseline.py --arch unet --preset quick --resume          # continue the run with today's settings

Trains ``monai.networks.nets.UNet`` (14 output channels: background + 13 organs; --arch resunet adds
MONAI's residual units) on the store's training slices and their materialised augmented views (the
same MONAI flip / rotation / intensity shift as Task 2, ``utils.data.augmentation``), with MONAI's
DiceCELoss and Adam, in the suite's one training loop (keyed run folder, best/last checkpoints,
--resume, NaN stop). It then scores exactly Task 1's (slice, organ) samples of --split with the
suite's Dice code, twice: the network's whole prediction ("none"), and the prediction of each organ
kept only inside that organ's ground-truth bounding box ("bound_box_crop": the oracle box SAM's
bound_box prompt gets, so the row compares like with like).

The run lives in checkpoints/baseline/<arch>/run-<key>/ (key: store, architecture, resolved
hyperparameters, seed). Writes results/baseline/<arch>/{metrics.json (Task 1's schema, with per-sample
records for the confidence intervals), per_slice.csv (as Task 1's), table3_baseline.md, history.json,
curves.png, config.json}.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from utils.scaffold.config import add_hyperparameters, new_parser, parse_with_presets  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Hyperparameters: `paper` is these constants (a GPU run). Edit here, or override any with the flag
# of the same name (--learning-rate 3e-4); a typed flag always beats the preset.
HYPERPARAMETERS = {
    "PRESET": ("paper", "paper (the constants here, sized for a GPU) or quick (fits make reproduce on 2 CPU cores)"),
    "EPOCHS": (200, "training epochs (not part of the run key: --resume --epochs N extends a run)", "positive"),
    # Adam at MONAI's tutorial rate; the schedule is a per-epoch exponential decay, which depends on the
    # epoch only (not on the total), so a resumed or extended run follows the same curve.
    "LEARNING_RATE": (1e-3, "Adam learning rate at epoch 1", "positive"),
    "LR_DECAY": (0.99, "learning rate multiplier per epoch: lr(epoch e) = LEARNING_RATE * LR_DECAY**(e-1)", "positive"),
    "WEIGHT_DECAY": (1e-5, "Adam weight decay"),
    "BATCH_SIZE": (16, "slices per step", "positive"),
    "SAMPLES_PER_EPOCH": (0, "training slices (and views) drawn per epoch; 0 = all"),
    "AUG_VIEWS": (2, "augmented views per training slice, as Task 2's paper preset (flip, rotation, intensity shift)"),
    "CHANNELS": ("16,32,64,128,256", "U-Net feature widths per level, finest first (MONAI's tutorial U-Net)"),
    "EVAL_BATCH": (8, "slices per forward pass when scoring", "positive"),
    # The training fast path (utils/train/fastpath.py), as in Tasks 2 and 3: scoring always runs in fp32.
    "TRAIN_PRECISION": ("same", "training forward autocast: same (= fp32, exact), auto (bf16 on a CPU with AMX, else fp32; fp16 + GradScaler on a GPU), fp32, bf16, fp16"),
}
PRESETS = {
    "paper": {},
    # Sized from measured cost on this project's 2-core CPU (160 x 160 phantom slices, 1 thread, CPU time
    # per training slice: U-Net 0.027 s, ResU-Net 0.061 s with these widths): 8 epochs x 192 slices (96 +
    # 1 view each). A whole run measured 104 s (U-Net) and 163 s (ResU-Net) of CPU (user + sys, on a
    # shared machine), ~134 s of 2-core time for both: over the 100 s planned, inside make reproduce's 15
    # minutes. Few steps, so a high rate and small batches: on the phantom, lr 3e-3 / batch 8 / decay 0.9
    # reached val mDice 0.22 in 8 epochs, lr 1e-2 / batch 4 / decay 0.95 reached 0.72 (docs/baselines-and-intervals.md).
    # Training autocast 'auto': bf16 on a CPU with AMX (ResU-Net steps 1.47x, U-Net 1.10x there,
    # docs/baselines-and-intervals.md), fp32 on one without.
    # 12 epochs since 2026-12-04 (8 until then): the phantom store was halved (48 training slices + 1 view
    # each), which halved the steps the preset was sized with; 12 epochs give back 3/4 of them (sized by
    # steps and seconds, not by a validation score; the 8-epoch run on the halved store: docs/baselines-and-intervals.md).
    "quick": {"epochs": 12, "learning_rate": 1e-2, "lr_decay": 0.95, "batch_size": 4, "aug_views": 1,
              "channels": "16,32,64,128", "train_precision": "auto"},
}
# Everything that changes what is learned; epochs and the scoring batch only change how long / how fast.
RUN_SETTINGS = ("learning_rate", "lr_decay", "weight_decay", "batch_size", "samples_per_epoch", "aug_views",
                "channels")
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None):
    from utils.models.unet import ARCHS
    from utils.scaffold.flags import RUN, add_flags, flag_group

    # The SAM scripts' data and run flags (utils/scaffold/flags.py); no SAM model, cache or decoder flags.
    # Declared in the order this script always had (argparse keeps it in config.json and the checkpoints).
    parser = new_parser(__doc__)
    parser.add_argument("--arch", choices=ARCHS, default="unet",
                        help="unet (MONAI UNet, plain units) or resunet (the same with 2 residual units per block)")
    add_flags(parser, ("--slices", "--split", "--results"), split="val",
              split_help="the (slice, organ) samples to score, as Task 1's --split (default val); "
                         "training always uses the train split")
    flag_group(parser, RUN).add_argument("--checkpoint-dir", type=Path, default=ROOT / "checkpoints" / "baseline",
                                         help="root of the run folders (default checkpoints/baseline)")
    add_flags(parser, ("--seed", "--device"), seed_help="seed for initialisation, sample order and augmentation "
                                                        "(default 0)")
    flag_group(parser, RUN).add_argument("--resume", action="store_true",
                                         help="continue the run with today's settings")
    add_flags(parser, ("--no-progress",))
    add_hyperparameters(parser, HYPERPARAMETERS)
    args = parse_with_presets(parser, argv, PRESETS)
    try:
        args.channels = [int(c) for c in args.channels.split(",")]
    except ValueError:
        parser.error(f"--channels takes comma-separated integers, e.g. 16,32,64,128; got {args.channels!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from utils.eval.baseline import evaluate_baseline_rows
    from utils.scaffold.results import config_record
    from utils.scaffold.runs import load_checkpoint
    from utils.scaffold.session import open_session

    session = open_session(args)  # seed, store, device: the SAM scripts' opening without model or cache
    fast, augment, train, samples = training_data(args, session)
    run = open_baseline_run(args, session, fast, len(train), len(samples))
    config = dict(config_record(args), task="baseline", channels=list(args.channels))  # config.json, checkpoints
    net, trained = train_network(args, session, fast, augment, train, samples, run, config)
    net.load_state_dict(load_checkpoint(run.best)["model"])
    t0 = time.perf_counter()
    rows = evaluate_baseline_rows(net, session.store, samples, batch_size=args.eval_batch)
    score_seconds = time.perf_counter() - t0
    results = results_record(args, session, fast, run, net, trained, rows, len(samples), score_seconds)
    write_outputs(args, session.store, run, trained.history, rows, results, config)
    print(f"training took {trained.seconds:.1f} s ({trained.cpu_seconds:.1f} s CPU) for {trained.epochs} epoch(s); "
          f"best epoch {trained.history['best_epoch']}; wrote {args.results / 'baseline' / args.arch / 'metrics.json'}")
    return 0


def training_data(args, session):
    """(fast path, augmentation, training samples, scored (slice, organ) samples); user errors exit 1."""
    from utils.data.augmentation import AugmentSpec
    from utils.data.samples import SampleIndex
    from utils.scaffold.session import fail
    from utils.scaffold.training import fast_path
    from utils.train.baseline import training_slices

    store = session.store
    fast = fast_path(session.device, "fp32", args.train_precision)
    augment = AugmentSpec(views=args.aug_views, seed=args.seed) if args.aug_views else None
    train = training_slices(store, augment)
    samples = SampleIndex(store).split_samples(args.split)  # Task 1's list: (store row, organ), rows in order
    if not store.indices("train") or not samples:
        raise fail(f"{store.path}: the baseline needs train slices and {args.split} samples; the store has "
                   f"{len(store.indices('train'))} train slices and {len(samples)} {args.split} samples")
    return fast, augment, train, samples


def open_baseline_run(args, session, fast, n_train: int, n_samples: int):
    """The keyed run folder (store, architecture, resolved settings, seed), said with what will be trained."""
    from utils.scaffold.training import open_training_run

    store = session.store
    identity = {"task": "baseline", "arch": args.arch, "store_key": store.key, "split": args.split,
                "seed": args.seed, "precision": "fp32", **{k: getattr(args, k) for k in RUN_SETTINGS},
                "train_precision": fast.train_precision}
    print(f"{store.description}: {len(store.indices('train'))} training slices x {1 + args.aug_views} view(s) = "
          f"{n_train} training samples, {n_samples} {args.split} samples; {args.arch} on {session.device}; "
          f"preset {args.preset}")
    return open_training_run(args.checkpoint_dir / args.arch, identity, args.resume)


def train_network(args, session, fast, augment, train, samples, run, config: dict):
    """Build and train the network in the suite's loop; returns (net, utils.scaffold.training.TrainedRun)."""
    import torch

    from utils.eval.baseline import evaluate_baseline_rows
    from utils.models.unet import build_baseline
    from utils.scaffold.session import fail
    from utils.scaffold.training import train_in_run
    from utils.train.baseline import SliceLoader, make_baseline_step
    from utils.train.fastpath import grad_scaler
    from utils.train.loop import LoopConfig

    store, device = session.store, session.device
    torch.manual_seed(args.seed)
    try:
        net = build_baseline(args.arch, args.channels).to(device)
    except ValueError as exc:
        raise fail(f"--channels {','.join(map(str, args.channels))}: {exc}") from exc
    optimizer = torch.optim.Adam(net.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    base_step = make_baseline_step(net, SliceLoader(store, augment), precision=fast.train_precision)

    def step(batch, epoch):
        for group in optimizer.param_groups:  # the schedule: a function of the epoch alone (resume-safe)
            group["lr"] = args.learning_rate * args.lr_decay ** epoch
        return base_step(batch, epoch)

    def validate(epoch):
        rows = evaluate_baseline_rows(net, store, samples, batch_size=args.eval_batch)
        return {"val_mDice": rows["none"][0]["mDice"], "val_mDice_in_box": rows["bound_box_crop"][0]["mDice"]}

    loop = LoopConfig(epochs=args.epochs, batch_size=args.batch_size, samples_per_epoch=args.samples_per_epoch,
                      seed=args.seed, monitor="val_mDice", run=run, progress=not args.no_progress,
                      extra=config, scaler=grad_scaler(fast, device))
    return net, train_in_run(args.arch, net, optimizer, train, step, validate, loop, args.resume)


def write_outputs(args, store, run, history: dict, rows: dict, results: dict, config: dict) -> None:
    """history.json + curves.png, per_slice.csv (Task 1's), metrics.json, table3_baseline.md, config.json."""
    from utils.core.organs import organ_name
    from utils.report.tables import baseline_table, titled
    from utils.scaffold.results import write_csv, write_results, write_training_curves

    out = args.results / "baseline" / args.arch
    curves = {"train_loss": history["train_loss"], "train_dice": history["train_metric"],
              "val_dice": [v["val_mDice"] for v in history["val"]],
              "val_dice_in_box": [v["val_mDice_in_box"] for v in history["val"]]}
    title = f"Baseline {args.arch} ({store.description}, preset {args.preset}, seed {args.seed})"
    write_training_curves(out, run, history, curves, [
        ("train_loss", "training loss (Dice + CE)"), ("train_dice", "training dice"), ("val_dice", "validation dice"),
        ("val_dice_in_box", "validation dice in box")], title)
    write_csv(out / "per_slice.csv", ["prompt", "case", "z", "organ", "dice"],  # Task 1's per-sample file
              [[name, r["case"], r["z"], organ_name(r["organ"]), f"{r['dice']:.6f}"]
               for name, (_, records) in rows.items() for r in records])
    write_results(out, results, {"table3_baseline.md": titled(f"Table 3 baseline: {args.arch}", baseline_table(results))},
                  config)
    print(f"\n{baseline_table(results)}")


def results_record(args, session, fast, run, net, trained, rows: dict, n_samples: int, score_seconds: float) -> dict:
    """metrics.json: Task 1's schema (prompts = the two rows), per-sample records, provenance and timing."""
    from utils.eval.bootstrap import triples
    from utils.scaffold.results import TrainedWeights, provenance

    store, history = session.store, trained.history
    weights = TrainedWeights(args.arch, run.best)
    meta = provenance(store, weights, session.device, args.seed, args.split, n_slices=len(store.indices(args.split)),
                      n_samples=n_samples, preset=args.preset, run=run.record, best_epoch=history["best_epoch"],
                      training_fast_path=fast.record())
    return {"model": args.arch, "checkpoint": weights.checkpoint, "data": store.description, "split": args.split,
            "n_slices": meta["n_slices"], "preset": args.preset, "run": run.record,
            "settings": {"epochs": args.epochs, **{k: getattr(args, k) for k in RUN_SETTINGS},
                         "channels": list(args.channels), "parameters": sum(p.numel() for p in net.parameters()),
                         "train_precision": fast.train_precision},
            "prompts": {name: dict(summary, best_epoch=history["best_epoch"]) for name, (summary, _) in rows.items()},
            "records": {name: triples(records) for name, (_, records) in rows.items()},
            "provenance": meta,
            "timing": {"epochs_trained": trained.epochs, "train_seconds": round(trained.seconds, 2),
                       "train_cpu_seconds": round(trained.cpu_seconds, 2),
                       "seconds_per_epoch": trained.seconds_per_epoch, "score_seconds": round(score_seconds, 2),
                       "device": meta["device"]}}


if __name__ == "__main__":
    from utils.scaffold.boundary import run_script  # the one error boundary (--debug: tracebacks)

    sys.exit(run_script(main))
