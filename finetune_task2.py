"""Task 2: fine-tune SAM's prompt encoder + mask decoder, one copy per prompt type.

    python finetune_task2.py --preset quick         # LiteMedSAM on the phantom store, minutes on a CPU
    python finetune_task2.py --model vit_h --slices data/slices_btcv   # the study's settings (paper preset), GPU
    python finetune_task2.py --preset quick --resume   # continue interrupted runs with the same settings
    torchrun --standalone --nproc_per_node=4 finetune_task2.py   # DDP: each global batch split over 4 ranks
    torchrun --standalone --nproc_per_node=5 finetune_task2.py --parallel prompts   # one prompt type per rank

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

import contextlib
import copy
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from utils.inference.prompts import DEFAULT_BOX_JITTER_PX  # noqa: E402
from utils.scaffold.config import parse_with_presets  # noqa: E402
from utils.scaffold.flags import new_task_parser  # noqa: E402

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
    "BOX_JITTER": (DEFAULT_BOX_JITTER_PX, "jittered_box only: each side of the tight box moves by a seeded shift of "
                                          "up to this many slice pixels (part of a jittered_box run's key)"),
    # The training fast path (utils/fastpath.py; README "Speed"): how a step is computed, not what it sees.
    # The study's exact path is same/off/off/off; every value is in the run key and the results.
    "TRAIN_PRECISION": ("same", "training forward autocast: same (= --precision), auto (bf16 CPU, fp16 + GradScaler GPU), fp32, bf16, fp16"),
    "COMPILE": ("off", "torch.compile the decoder for training: auto (GPU only), on, off; falls back to eager, saying so"),
    "PREFETCH": ("off", "prepare the next batch (targets, prompts, embeddings) in a background thread: auto (GPU), on, off"),
    "RESIDENT": ("off", "hold the whole embedding cache in GPU memory when it fits in half the free memory: auto, on, off"),
    "LARGEST_BATCH": (False, "GPU: train at the largest power-of-two batch (<= 1024) a step fits, lr scaled linearly (SGD)"),
}
PRESETS = {
    "paper": {},  # exactly the constants above
    # 2 CPU cores decode ~20 prompts/s and train ~7 samples/s, so the quick preset takes a few short
    # epochs per prompt type, picks its checkpoint on 64 validation samples and scores it on the whole
    # split. lr 0.01, not 0.1: with LiteMedSAM on the phantom, lr 0.1 collapsed the point-prompt
    # decoder to empty masks by epoch 3 (val mDice 0.34 -> 0.00) and made the box decoder worse every
    # epoch, while 0.01 learned fastest for both (README, "Choosing the quick preset's learning rate").
    # No augmented views: each costs an encoder pass per training slice. bf16 autocast in training (1.43x
    # on this CPU, benchmarks/run.py; the same validation mDice as fp32 within the seed spread, README)
    # pays for 2x the samples of the first quick preset (3 x 32, point mDice 0.64), and the best epoch is
    # picked on 32 validation samples instead of 64 (README, "Task 2's quick preset").
    "quick": {"epochs": 3, "learning_rate": 0.01, "batch_size": 16, "samples_per_epoch": 64, "val_samples": 32,
              "aug_views": 0, "train_precision": "bf16"},
}
# The settings that make a run that run (utils.scaffold.runs): everything above but epochs, the prompt list
# and the decode batch, which change how long or how fast, not what is learned.
RUN_SETTINGS = ("learning_rate", "momentum", "weight_decay", "batch_size", "samples_per_epoch", "val_samples",
                "aug_views")
FAST_FLAGS = ("train_precision", "compile", "prefetch", "resident")  # resolved into the run key by utils.train.fastpath
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None):
    parser = new_task_parser(__doc__, HYPERPARAMETERS, split=None)
    parser.add_argument("--resume", action="store_true",
                        help="continue each prompt's run with today's settings from its last checkpoint")
    parser.add_argument("--checkpoint-dir", type=Path, default=ROOT / "checkpoints" / "finetuned",
                        help="root of the run folders (default checkpoints/finetuned)")
    parser.add_argument("--parallel", choices=("data", "prompts"), default="data",
                        help="under torchrun: data = every prompt type in turn, each global batch split across the "
                             "ranks (DDP); prompts = the prompt types dealt to the ranks, each trained by one rank "
                             "alone (which writes that prompt's run and history). Ignored in one process")
    from utils.inference.prompts import parse_prompt_types

    return parse_with_presets(parser, argv, PRESETS, checks={"prompts": parse_prompt_types})  # bad: exit 2


@dataclass
class TrainingData:
    caches: list  # [base cache, augmented cache (when --aug-views > 0)]
    train: list  # (cache id, row, organ)
    val: list  # (row, organ): the whole validation split
    val_epoch: list  # (row, organ): the fixed subset validated every epoch
    encode_seconds: float
    fast: "object" = None  # utils.train.fastpath.FastPath: how training steps are computed
    resident: dict | None = None  # {cache id: ResidentEmbeddings} when the caches live on the GPU


def prepare_data(args, exp) -> TrainingData:
    """Encode what training needs and list the training and validation samples."""
    import torch

    from utils.data.augmentation import AugmentSpec
    from utils.embeddings.cache import EmbeddingCache
    from utils.scaffold.session import fail
    from utils.train.fastpath import ResidentEmbeddings

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
    fast = fast_path(args, exp.device, sum(len(c) for c in caches))
    resident = {i: ResidentEmbeddings(c, exp.device) for i, c in enumerate(caches)} if fast.resident else None
    return TrainingData(caches, train, val, val_epoch, time.perf_counter() - t0, fast, resident)


def fast_path(args, device, cache_rows: int):
    """The resolved training fast path of ``args`` (its four flags) on ``device``; user errors exit."""
    from utils.scaffold.session import fail
    from utils.train.fastpath import resolve

    try:
        return resolve(device, args.precision, args.train_precision, args.compile, args.prefetch, args.resident,
                       cache_bytes=cache_rows * 256 * 64 * 64 * 2)
    except ValueError as exc:
        raise fail(str(exc)) from exc


def original_results(args, exp, prompt_types, val_samples) -> tuple[dict, str, dict]:
    """Zero-shot mDice per prompt: Task 1's results when they match this model, data, split, seed and precision.
    Also returns the per-sample records {prompt: [(case, organ, dice)]} the tables' intervals need."""
    from utils.core.io import read_json
    from utils.eval.bootstrap import triples
    from utils.eval.segmentation import evaluate_prompt
    from utils.scaffold.results import scored_alike

    path = args.results / "task1" / "metrics.json"
    if path.is_file():
        task1 = read_json(path)
        meta = task1.get("provenance", {})
        if (scored_alike(meta, exp.store, exp.model, args.seed, "val", args.precision, args.encoder_precision)
                and not meta.get("multimask_output") and not meta.get("finetuned")
                and all(p in task1["prompts"] for p in prompt_types)
                and ("jittered_box" not in prompt_types
                     or meta.get("box_jitter", DEFAULT_BOX_JITTER_PX) == args.box_jitter)
                and all(p in task1.get("records", {}) for p in prompt_types)):
            return ({p: task1["prompts"][p] for p in prompt_types}, f"read from {path}",
                    {p: task1["records"][p] for p in prompt_types})
    print("zero-shot results for this model/data/split not found in results/task1: computing them")
    scored = {p: evaluate_prompt(exp.cache, val_samples, p, seed=args.seed, batch_size=args.decode_batch,
                                 precision=args.precision, box_jitter=args.box_jitter) for p in prompt_types}
    return ({p: summary for p, (summary, _) in scored.items()},
            "computed by finetune_task2.py (same evaluation code as Task 1)",
            {p: triples(records) for p, (_, records) in scored.items()})


@dataclass
class PreparedGroup:
    """One slice size's share of a batch, ready for the decoder: what the fast path makes ahead."""

    cache_id: int
    samples: list  # (row, organ), grouped by row
    targets: "object"  # bool (n, H, W) masks on the model's device
    points: "object"  # prompt-encoder inputs from utils.inference.decoding.prompt_inputs
    boxes: "object"
    embeddings: "object"  # float32 (n, 256, 64, 64) on the model's device
    size: tuple


def make_prepare(caches, prompt_type: str, seed: int, resident: dict | None = None,
                 box_jitter: int = DEFAULT_BOX_JITTER_PX):
    """prepare(batch, epoch) -> [PreparedGroup]: labels, prompts and embeddings of a batch of
    (cache id, row, organ) samples, grouped by slice (each slice's label and embedding read once).
    No autograd: safe to run in a background thread. ``resident``: {cache id: ResidentEmbeddings}."""
    from utils.inference.batches import build_batch, gather_embeddings
    from utils.inference.decoding import prompt_inputs
    from utils.train.fastpath import slice_grouped

    def prepare(batch, epoch):
        groups: dict = {}
        for cache_id, row, organ in slice_grouped(batch):
            groups.setdefault((cache_id, caches[cache_id].index.shape(row)), []).append((row, organ))
        out = []
        for (cache_id, size), samples in groups.items():
            cache = caches[cache_id]
            masks, prompts, sizes = build_batch(cache, samples, prompt_type, seed, epoch, box_jitter)
            points, boxes = prompt_inputs(cache.model, prompts, sizes)
            embeddings = (resident[cache_id].gather([r for r, _ in samples]) if resident
                          else gather_embeddings(cache, samples))
            out.append(PreparedGroup(cache_id, samples, masks.to(embeddings.device), points, boxes, embeddings, size))
        return out

    return prepare


def make_step(caches, prompt_type: str, seed: int, trainable, precision: str, paired=None, resident=None,
              box_jitter: int = DEFAULT_BOX_JITTER_PX):
    """Forward + Dice loss for a batch of (cache id, row, organ) samples, or for what ``make_prepare``
    made of one (the fast path prepares batches ahead). ``precision``: the training forward's autocast
    (``--train-precision``); ``paired``: a compiled :func:`utils.inference.decoding.predict_masks_paired`.

    The loss is MONAI's DiceLoss (sigmoid) at the slice's resolution, averaged over the batch's samples
    (a group of each slice size weighs by its sample count)."""
    from monai.losses import DiceLoss

    from utils.core.precision import autocast
    from utils.eval.dice import batch_dice
    from utils.inference.decoding import decode_inputs, predict_masks_paired
    from utils.train.loop import StepResult

    loss_fn = DiceLoss(sigmoid=True)
    prepare = make_prepare(caches, prompt_type, seed, resident, box_jitter)
    paired = paired or predict_masks_paired

    def step(batch, epoch):
        groups = batch if batch and isinstance(batch[0], PreparedGroup) else prepare(batch, epoch)
        n = sum(len(g.samples) for g in groups)
        loss = 0.0
        dice_sum = 0.0
        for g in groups:
            model = caches[g.cache_id].model
            with autocast(model.device, precision):
                low_res, _ = decode_inputs(g.embeddings, g.points, g.boxes, False, trainable["prompt_encoder"],
                                           trainable["mask_decoder"], paired=paired)
            logits = model.postprocess(low_res.float(), g.size)[:, 0].flatten(1)
            targets = g.targets.flatten(1).float()
            loss = loss + loss_fn(logits[:, None], targets[:, None]) * (len(g.samples) / n)
            dice_sum += float(batch_dice(logits.detach() > 0, targets > 0.5).sum())
        return StepResult(loss=loss, metric_sum=dice_sum, count=n)

    step.prepare = prepare
    return step


def largest_batch_for(args, exp, data: TrainingData, prompt_type: str) -> tuple[int, float]:
    """(batch, lr) for --largest-batch: on a GPU the largest power-of-two batch whose training step fits,
    lr scaled linearly from --batch-size (utils.train.fastpath.scaled_lr); on a CPU (throughput flat in the
    batch, benchmarks/run.py) --batch-size and --learning-rate unchanged, said so."""
    import torch

    from utils.train.fastpath import cuda_step_fits, largest_batch, scaled_lr

    if exp.device.type != "cuda":
        print("--largest-batch: a CPU gains nothing from larger batches; keeping --batch-size")
        return args.batch_size, args.learning_rate
    probe = torch.nn.ModuleDict({"prompt_encoder": copy.deepcopy(exp.model.sam.prompt_encoder),
                                 "mask_decoder": copy.deepcopy(exp.model.sam.mask_decoder)}).requires_grad_(True)
    step = make_step(data.caches, prompt_type, args.seed, probe, data.fast.train_precision, resident=data.resident)

    def one_step(batch: int) -> None:
        samples = (data.train * (1 + batch // max(len(data.train), 1)))[:batch]
        step(samples, 0).loss.backward()
        probe.zero_grad(set_to_none=True)

    batch = largest_batch(cuda_step_fits(one_step), args.batch_size)
    lr = scaled_lr(args.learning_rate, args.batch_size, batch, "sgd")
    print(f"--largest-batch: batch {batch}, lr {lr:g} (linear scaling from batch {args.batch_size}, lr {args.learning_rate:g})")
    return batch, lr


def finetune_prompt(args, exp, data: TrainingData, prompt_type: str, config: dict) -> dict:
    """Train one prompt type's decoder in its run folder; return its scored best checkpoint and history."""
    import torch

    from utils.core import distributed
    from utils.eval.bootstrap import triples
    from utils.eval.segmentation import evaluate_prompt
    from utils.inference.decoding import predict_masks_paired
    from utils.scaffold.runs import RunMismatch, identity_of, load_checkpoint, open_run
    from utils.scaffold.session import fail
    from utils.train.fastpath import CompiledOrEager, grad_scaler
    from utils.train.loop import LoopConfig, TrainingDiverged, run_training

    model = exp.model
    settings = {k: getattr(args, k) for k in RUN_SETTINGS}
    if args.largest_batch:
        settings["batch_size"], settings["learning_rate"] = largest_batch_for(args, exp, data, prompt_type)
    identity = identity_of("task2", exp, prompt_type, args.seed, args.precision, args.encoder_precision,
                           **settings, fast_path=data.fast.record(),
                           # only a jittered_box run depends on the jitter (other runs' keys stay as they were)
                           **({"box_jitter": args.box_jitter} if prompt_type == "jittered_box" else {}))
    try:
        run, note = distributed.main_then_share(open_run, args.checkpoint_dir / model.name / prompt_type, identity,
                                                args.resume)  # torchrun: rank 0 makes the folder
    except RunMismatch as exc:
        raise fail(str(exc)) from exc
    print(note)
    torch.manual_seed(args.seed)
    trainable = torch.nn.ModuleDict({"prompt_encoder": copy.deepcopy(model.sam.prompt_encoder),
                                     "mask_decoder": copy.deepcopy(model.sam.mask_decoder)})
    for p in trainable.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.SGD(trainable.parameters(), lr=settings["learning_rate"], momentum=args.momentum,
                                weight_decay=args.weight_decay)

    def score(samples):  # (summary, per-sample records)
        return evaluate_prompt(exp.cache, samples, prompt_type, seed=args.seed, batch_size=args.decode_batch,
                               prompt_encoder=trainable["prompt_encoder"], mask_decoder=trainable["mask_decoder"],
                               precision=args.precision, box_jitter=args.box_jitter)

    def validate(epoch):
        summary = score(data.val_epoch)[0]
        return {"val_mDice": summary["mDice"], "summary": summary}

    fast = data.fast
    paired = CompiledOrEager(predict_masks_paired, fast.compile)
    step = make_step(data.caches, prompt_type, args.seed, trainable, fast.train_precision, paired, data.resident,
                     args.box_jitter)
    loop = LoopConfig(epochs=args.epochs, batch_size=settings["batch_size"], samples_per_epoch=args.samples_per_epoch,
                      seed=args.seed, monitor="val_mDice", run=run, progress=not args.no_progress,
                      extra=dict(config, prompt=prompt_type, task="task2", fast_path=fast.record()),
                      prepare=step.prepare, prefetch=fast.prefetch, scaler=grad_scaler(fast, model.device))
    started = time.perf_counter()
    try:
        history, trained = run_training(trainable, optimizer, data.train, step, validate, loop, resume=args.resume)
    except (TrainingDiverged, RunMismatch) as exc:
        raise fail(f"{prompt_type}: {exc}") from exc
    seconds = time.perf_counter() - started
    # chosen on the per-epoch samples, scored on the whole split with per-sample records (for the intervals)
    trainable.load_state_dict(load_checkpoint(run.best)["model"])
    best, records = score(data.val)
    if paired.note != "eager (compile off)":
        print(f"{prompt_type}: decoder {paired.note}")
    return {"best": dict(best, best_epoch=history["best_epoch"], checkpoint=str(run.best), run=run.record),
            "records": triples(records),
            "history": history, "run": run, "seconds_per_epoch": round(seconds / trained, 2) if trained else None}


def write_prompt_outputs(out: Path, prompt_type: str, outcome: dict, title: str) -> None:
    """The latest run's curves and history, copied into results/ for the report (with the run's key)."""
    from utils.scaffold.results import write_training_curves

    history = outcome["history"]
    curves = {"train_loss": history["train_loss"], "train_dice": history["train_metric"],
              "val_dice": [v["val_mDice"] for v in history["val"]]}
    write_training_curves(out / prompt_type, outcome["run"], history, curves, [
        ("train_loss", "training loss"), ("train_dice", "training dice"), ("val_dice", "validation dice")], title)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from utils.core import distributed
    from utils.inference.prompts import PROMPT_TITLES, parse_prompt_types
    from utils.report.tables import mdice_table, table2, table3, titled
    from utils.scaffold.results import config_record, provenance, write_results
    from utils.scaffold.session import fail, open_experiment

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
    by_prompt = args.parallel == "prompts" and distributed.is_distributed()
    for prompt_type in distributed.shard(prompt_types) if by_prompt else prompt_types:
        print(f"\n== {PROMPT_TITLES[prompt_type]}: zero-shot val mDice {originals[prompt_type]['mDice']:.4f}")
        with distributed.solo() if by_prompt else contextlib.nullcontext():  # prompts: this rank trains alone
            outcomes[prompt_type] = finetune_prompt(args, exp, data, prompt_type, config)
            if distributed.is_main():
                write_prompt_outputs(out, prompt_type, outcomes[prompt_type], f"Task 2, {PROMPT_TITLES[prompt_type]} "
                                     f"({exp.model.name}, {exp.store.description}, preset {args.preset})")
    if by_prompt:  # every rank's prompt types, back in the order asked for
        gathered = {p: o for part in distributed.gather(outcomes) for p, o in part.items()}
        outcomes = {p: gathered[p] for p in prompt_types}
    if not distributed.is_main():  # torchrun: rank 0 writes the results
        return 0

    meta = provenance(exp.store, exp.model, exp.device, args.seed, "val", precision=args.precision,
                      encoder_precision=args.encoder_precision, n_slices=len(exp.cache.rows_for("val")),
                      preset=args.preset, runs={p: o["run"].record for p, o in outcomes.items()},
                      box_jitter=args.box_jitter, training_fast_path=data.fast.record())
    results = {k: meta[k] for k in ("model", "checkpoint", "data", "split")}
    results.update({
        "n_slices": meta["n_slices"], "preset": args.preset,
        "settings": {"epochs": args.epochs, **{k: getattr(args, k) for k in RUN_SETTINGS},
                     "fast_path": data.fast.record(),
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
    from utils.scaffold.boundary import run_script  # the one error boundary (--debug: tracebacks)

    sys.exit(run_script(main))
