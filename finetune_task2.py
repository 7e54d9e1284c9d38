"""Task 2: fine-tune SAM's prompt encoder + mask decoder, one copy per prompt type.

    python finetune_task2.py --preset quick         # LiteMedSAM on the phantom store, minutes on a CPU
    python finetune_task2.py --model vit_h --slices data/slices_btcv   # the study's settings (paper preset), GPU
    python finetune_task2.py --preset quick --resume   # continue interrupted runs with the same settings

Trains on the training split (and its materialised augmented views) and validates on the validation
split; there is no --split. The image encoder is frozen and never runs in the training loop: embeddings
come from the embedding cache. Loss: MONAI DiceLoss on sigmoid outputs; SGD. Each epoch logs training
loss, training Dice and validation Dice (same prompt type, the Task 1 evaluation code).

Each prompt type's run lives in a keyed folder checkpoints/finetuned/<model>/<prompt>/run-<key>/ (run.json,
best.pt, last.pt, history.json); the key covers the model, checkpoint, slice store, prompt, resolved
hyperparameters, seed and precision, so --resume continues only a run with today's settings. Writes
results/task2/{<prompt>/history.json, <prompt>/curves.png, metrics.json, table2.md, table3.md, config.json}.
"""
from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from utils.cli import new_task_parser  # noqa: E402
from utils.config import parse_with_presets  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Hyperparameters: the study's settings are the `paper` preset. Edit here, or override any of them
# with the flag of the same name (--learning-rate 0.05); a typed flag always beats the preset.
HYPERPARAMETERS = {
    "PRESET": ("paper", "paper (the constants here: the study's settings) or quick (fits the phantom study in the CPU budget)"),
    "PROMPTS": ("all", "comma-separated prompt types to fine-tune, or 'all' for the study's five"),
    "EPOCHS": (50, "training epochs (not part of the run key: --resume --epochs N extends a run)", "positive"),
    "LEARNING_RATE": (0.1, "SGD learning rate: high, because Dice-loss gradients are small", "positive"),
    "MOMENTUM": (0.9, "SGD momentum", "fraction"),
    "WEIGHT_DECAY": (1e-4, "SGD weight decay"),
    "BATCH_SIZE": (64, "samples per step: the study found a large batch key to stable gradients", "positive"),
    "SAMPLES_PER_EPOCH": (0, "(slice, organ) samples drawn per epoch; 0 = all"),
    "VAL_SAMPLES": (0, "validation samples per epoch (fixed subset); 0 = the whole split"),
    "AUG_VIEWS": (2, "augmented views materialised per training slice (flip, rotation, intensity shift)"),
    "DECODE_BATCH": (0, "prompts per decoder call in validation; 0 = auto (8 on a CPU, 64 on a GPU)"),
}
PRESETS = {
    "paper": {},  # exactly the constants above
    # 2 CPU cores decode ~20 prompts/s and train ~7 samples/s, so the quick preset takes a few short
    # epochs per prompt type, picks its checkpoint on 64 validation samples and scores it on the whole
    # split. lr 0.01, not 0.1: with LiteMedSAM on the phantom, lr 0.1 collapsed the point-prompt
    # decoder to empty masks by epoch 3 (val mDice 0.34 -> 0.00) and made the box decoder worse every
    # epoch, while 0.01 learned fastest for both (README, "Choosing the quick preset's learning rate").
    # No augmented views: each costs an encoder pass per training slice.
    "quick": {"epochs": 3, "learning_rate": 0.01, "batch_size": 16, "samples_per_epoch": 32, "val_samples": 64,
              "aug_views": 0},
}
# The settings that make a run that run (utils.runs): everything above but epochs, the prompt list
# and the decode batch, which change how long or how fast, not what is learned.
RUN_SETTINGS = ("learning_rate", "momentum", "weight_decay", "batch_size", "samples_per_epoch", "val_samples",
                "aug_views")
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None):
    parser = new_task_parser(__doc__, HYPERPARAMETERS, split=None)
    parser.add_argument("--resume", action="store_true",
                        help="continue each prompt's run with today's settings from its last checkpoint")
    parser.add_argument("--checkpoint-dir", type=Path, default=ROOT / "checkpoints" / "finetuned",
                        help="root of the run folders (default checkpoints/finetuned)")
    return parse_with_presets(parser, argv, PRESETS)


@dataclass
class TrainingData:
    caches: list  # [base cache, augmented cache (when --aug-views > 0)]
    train: list  # (cache id, row, organ)
    val: list  # (row, organ): the whole validation split
    val_epoch: list  # (row, organ): the fixed subset validated every epoch
    encode_seconds: float


def prepare_data(args, exp) -> TrainingData:
    """Encode what training needs and list the training and validation samples."""
    import torch

    from utils.augmentation import AugmentSpec
    from utils.cli import fail
    from utils.embedding_cache import EmbeddingCache

    cache = exp.cache
    train_rows, val_rows = cache.rows_for("train"), cache.rows_for("val")
    if not train_rows or not val_rows:
        raise fail(f"{exp.store.path}: fine-tuning needs train and val slices; the store has {len(train_rows)} "
                   f"train and {len(val_rows)} val")
    t0 = time.perf_counter()
    cache.ensure(train_rows + val_rows, batch_size=args.encode_batch, progress=not args.no_progress)
    caches = [cache]
    if args.aug_views > 0:
        aug = EmbeddingCache(exp.model, exp.store, AugmentSpec(views=args.aug_views, seed=args.seed),
                             root=args.cache_dir, encoder_precision=args.encoder_precision)
        aug.ensure(batch_size=args.encode_batch, progress=not args.no_progress)
        caches.append(aug)
    train = [(0, r, o) for r, o in cache.samples(train_rows)]
    if len(caches) > 1:
        train += [(1, r, o) for r, o in caches[1].samples(range(len(caches[1])))]
    val = cache.samples(val_rows)
    val_epoch = val
    if args.val_samples and args.val_samples < len(val):
        generator = torch.Generator().manual_seed(args.seed)
        pick = sorted(torch.randperm(len(val), generator=generator)[: args.val_samples].tolist())
        val_epoch = [val[i] for i in pick]
    return TrainingData(caches, train, val, val_epoch, time.perf_counter() - t0)


def original_results(args, exp, prompt_types, val_samples) -> tuple[dict, str, dict]:
    """Zero-shot mDice per prompt: Task 1's results when they match this model, data, split, seed and precision.
    Also returns the per-sample records {prompt: [(case, organ, dice)]} the tables' intervals need."""
    from utils.bootstrap import triples
    from utils.evaluation import evaluate_prompt
    from utils.io import read_json

    path = args.results / "task1" / "metrics.json"
    if path.is_file():
        task1 = read_json(path)
        meta = task1.get("provenance", {})
        if (meta.get("store_key") == exp.store.key and meta.get("checkpoint_sha256") == exp.model.checkpoint_sha256
                and meta.get("split") == "val" and meta.get("seed") == args.seed and not meta.get("multimask_output")
                and meta.get("precision") == args.precision and meta.get("encoder_precision") == args.encoder_precision
                and not meta.get("finetuned") and all(p in task1["prompts"] for p in prompt_types)
                and all(p in task1.get("records", {}) for p in prompt_types)):
            return ({p: task1["prompts"][p] for p in prompt_types}, f"read from {path}",
                    {p: task1["records"][p] for p in prompt_types})
    print("zero-shot results for this model/data/split not found in results/task1: computing them")
    scored = {p: evaluate_prompt(exp.cache, val_samples, p, seed=args.seed, batch_size=args.decode_batch,
                                 precision=args.precision) for p in prompt_types}
    return ({p: summary for p, (summary, _) in scored.items()},
            "computed by finetune_task2.py (same evaluation code as Task 1)",
            {p: triples(records) for p, (_, records) in scored.items()})


def make_step(caches, prompt_type: str, seed: int, trainable, precision: str):
    """Forward + Dice loss for a batch of (cache id, row, organ) samples."""
    import torch
    from monai.losses import DiceLoss

    from utils.evaluation import build_batch, predict_logits
    from utils.metrics import batch_dice
    from utils.training import StepResult

    loss_fn = DiceLoss(sigmoid=True)

    def step(batch, epoch):
        logits, targets = [], []
        groups: dict = {}
        for cache_id, row, organ in batch:
            groups.setdefault((cache_id, caches[cache_id].index.shape(row)), []).append((row, organ))
        for (cache_id, _), samples in groups.items():
            masks, prompts, sizes = build_batch(caches[cache_id], samples, prompt_type, seed, epoch)
            logits.append(predict_logits(caches[cache_id], samples, prompts, sizes, False, trainable["prompt_encoder"],
                                         trainable["mask_decoder"], precision).flatten(1))
            targets.append(masks.flatten(1).to(logits[-1].device))
        logits_t = torch.cat(logits)
        targets_t = torch.cat(targets).float()
        loss = loss_fn(logits_t[:, None], targets_t[:, None])
        dice = batch_dice(logits_t.detach() > 0, targets_t > 0.5)
        return StepResult(loss=loss, metric_sum=float(dice.sum()), count=len(batch))

    return step


def finetune_prompt(args, exp, data: TrainingData, prompt_type: str, config: dict) -> dict:
    """Train one prompt type's decoder in its run folder; return its scored best checkpoint and history."""
    import torch

    from utils.bootstrap import triples
    from utils.cli import fail
    from utils.evaluation import evaluate_prompt
    from utils.runs import RunMismatch, identity_of, load_checkpoint, open_run
    from utils.training import LoopConfig, TrainingDiverged, run_training

    model = exp.model
    identity = identity_of("task2", exp, prompt_type, args.seed, args.precision, args.encoder_precision,
                           **{k: getattr(args, k) for k in RUN_SETTINGS})
    try:
        run, note = open_run(args.checkpoint_dir / model.name / prompt_type, identity, args.resume)
    except RunMismatch as exc:
        raise fail(str(exc)) from exc
    print(note)
    torch.manual_seed(args.seed)
    trainable = torch.nn.ModuleDict({"prompt_encoder": copy.deepcopy(model.sam.prompt_encoder),
                                     "mask_decoder": copy.deepcopy(model.sam.mask_decoder)})
    for p in trainable.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.SGD(trainable.parameters(), lr=args.learning_rate, momentum=args.momentum,
                                weight_decay=args.weight_decay)

    def score(samples):  # (summary, per-sample records)
        return evaluate_prompt(exp.cache, samples, prompt_type, seed=args.seed, batch_size=args.decode_batch,
                               prompt_encoder=trainable["prompt_encoder"], mask_decoder=trainable["mask_decoder"],
                               precision=args.precision)

    def validate(epoch):
        summary = score(data.val_epoch)[0]
        return {"val_mDice": summary["mDice"], "summary": summary}

    loop = LoopConfig(epochs=args.epochs, batch_size=args.batch_size, samples_per_epoch=args.samples_per_epoch,
                      seed=args.seed, monitor="val_mDice", run=run, progress=not args.no_progress,
                      extra=dict(config, prompt=prompt_type, task="task2"))
    started = time.perf_counter()
    try:
        history, trained = run_training(trainable, optimizer, data.train,
                                        make_step(data.caches, prompt_type, args.seed, trainable, args.precision),
                                        validate, loop, resume=args.resume)
    except (TrainingDiverged, RunMismatch) as exc:
        raise fail(f"{prompt_type}: {exc}") from exc
    seconds = time.perf_counter() - started
    # chosen on the per-epoch samples, scored on the whole split with per-sample records (for the intervals)
    trainable.load_state_dict(load_checkpoint(run.best)["model"])
    best, records = score(data.val)
    return {"best": dict(best, best_epoch=history["best_epoch"], checkpoint=str(run.best), run=run.record),
            "records": triples(records),
            "history": history, "run": run, "seconds_per_epoch": round(seconds / trained, 2) if trained else None}


def write_prompt_outputs(out: Path, prompt_type: str, outcome: dict, title: str) -> None:
    """The latest run's curves and history, copied into results/ for the report (with the run's key)."""
    from utils.io import write_json
    from utils.plots import save_curves

    history = outcome["history"]
    curves = {"train_loss": history["train_loss"], "train_dice": history["train_metric"],
              "val_dice": [v["val_mDice"] for v in history["val"]]}
    write_json(out / prompt_type / "history.json", dict(curves, epoch=history["epoch"],
                                                        best_epoch=history["best_epoch"], run=outcome["run"].record))
    for folder in (outcome["run"].path, out / prompt_type):
        save_curves(curves, [("train_loss", "training loss"), ("train_dice", "training dice"),
                             ("val_dice", "validation dice")], folder / "curves.png", title)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from utils.cli import fail, open_experiment
    from utils.prompts import PROMPT_TITLES, parse_prompt_types
    from utils.reporting import config_record, provenance, write_results
    from utils.tables import mdice_table, table2, table3, titled

    try:
        prompt_types = parse_prompt_types(args.prompts)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    exp = open_experiment(args)
    for p in exp.model.sam.parameters():
        p.requires_grad_(False)
    data = prepare_data(args, exp)
    print(f"{exp.store.description}: {len(data.train)} training samples ({1 + args.aug_views} view(s) per slice), "
          f"{len(data.val)} validation samples ({len(data.val_epoch)} per epoch); preset {args.preset}")
    config = config_record(args)
    originals, original_source, original_records = original_results(args, exp, prompt_types, data.val)
    outcomes = {}
    out = args.results / "task2"
    for prompt_type in prompt_types:
        print(f"\n== {PROMPT_TITLES[prompt_type]}: zero-shot val mDice {originals[prompt_type]['mDice']:.4f}")
        outcomes[prompt_type] = finetune_prompt(args, exp, data, prompt_type, config)
        write_prompt_outputs(out, prompt_type, outcomes[prompt_type], f"Task 2, {PROMPT_TITLES[prompt_type]} "
                             f"({exp.model.name}, {exp.store.description}, preset {args.preset})")

    meta = provenance(exp.store, exp.model, exp.device, args.seed, "val", precision=args.precision,
                      encoder_precision=args.encoder_precision, n_slices=len(exp.cache.rows_for("val")),
                      preset=args.preset, runs={p: o["run"].record for p, o in outcomes.items()})
    results = {k: meta[k] for k in ("model", "checkpoint", "data", "split")}
    results.update({
        "n_slices": meta["n_slices"], "preset": args.preset,
        "settings": {"epochs": args.epochs, **{k: getattr(args, k) for k in RUN_SETTINGS},
                     "val_samples": len(data.val), "val_samples_per_epoch": len(data.val_epoch)},
        "prompts": {p: o["best"] for p, o in outcomes.items()}, "original": originals,
        "original_source": original_source, "provenance": meta,
        # per sample (case, organ, dice), paired by position, for the tables' bootstrap intervals
        "records": {"original": original_records, "finetuned": {p: o["records"] for p, o in outcomes.items()}},
        "timing": {"encode_seconds": round(data.encode_seconds, 2),
                   "seconds_per_epoch": {p: o["seconds_per_epoch"] for p, o in outcomes.items()}},
    })
    tables = {"table2.md": titled("Table 2: mDice of different prompts after fine-tuning", table2(results))}
    if table3(results):
        tables["table3.md"] = titled("Table 3: performance comparison", table3(results))
    else:
        (out / "table3.md").unlink(missing_ok=True)  # an earlier run's Table 3 does not describe this run
    write_results(out, results, tables, config)
    print(f"\n{mdice_table(results['prompts'])}")
    print(f"seconds per epoch: {results['timing']['seconds_per_epoch']}")
    print(f"wrote {out / 'table2.md'} and {out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
