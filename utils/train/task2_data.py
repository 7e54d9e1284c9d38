"""Task 2's inputs and results (finetune_task2.py): the embeddings training needs encoded, the training and
validation samples listed, the training fast path resolved (and the batch and lr of --largest-batch), the weights
a prompt type starts from, the zero-shot scores the fine-tuned ones are compared with (Task 1's, when they were
scored alike, else scored here with the same code), and the results file.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

from utils.inference.prompts import DEFAULT_BOX_JITTER_PX


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

    cache, index = exp.cache, exp.cache.index
    train_rows, val_rows = index.rows_for("train"), index.rows_for("val")
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
    train = [(0, r, o) for r, o in index.samples(train_rows)]
    if len(caches) > 1:  # every row of the augmented cache is a view of a training slice
        train += [(1, r, o) for r, o in caches[1].index.samples(range(len(caches[1])))]
    val = val_epoch = index.samples(val_rows)
    if args.val_samples and args.val_samples < len(val):
        generator = torch.Generator().manual_seed(args.seed)
        pick = sorted(torch.randperm(len(val), generator=generator)[: args.val_samples].tolist())
        val_epoch = [val[i] for i in pick]
    fast = fast_path(args, exp.device, sum(len(c) for c in caches))
    resident = {i: ResidentEmbeddings(c, exp.device) for i, c in enumerate(caches)} if fast.resident else None
    return TrainingData(caches, train, val, val_epoch, time.perf_counter() - t0, fast, resident)


# A Task 2 prompt type that starts from another type's Task 2 decoder instead of the pre-trained one: the
# propagation decoder learns the boxes propagation carries (the box decoder's boxes, grown and moved), so it starts
# from the box decoder, as the prototype did. Recorded in its run key.
START_FROM = {"propagated_box": "bound_box"}


def start_weights(args, exp, prompt_type: str) -> tuple[dict | None, dict]:
    """(the state dict to start ``prompt_type``'s decoder from, or None for the pre-trained one; the record for its
    run key): the newest complete Task 2 run of ``START_FROM[prompt_type]`` under ``--checkpoint-dir`` for this
    model, checkpoint and store, said on the console."""
    from utils.core.checkpoints import TASK2
    from utils.scaffold.runs import find_handoff
    from utils.scaffold.session import wanted_data

    source = START_FROM.get(prompt_type)
    if source is None:
        return None, {}
    handoff, why = find_handoff("auto", args.checkpoint_dir, source, wanted_data(exp), kind=TASK2)
    if handoff is None:
        print(f"{prompt_type}: starting from the pre-trained decoder ({why}; train {source} first to start from it)")
        return None, {"start": "pre-trained"}
    print(f"{prompt_type}: starting from Task 2's {source} decoder, {handoff.describe()}")
    return handoff.state["model"], {"start": f"{source} run-{handoff.run_key}"}


def fast_path(args, device, cache_rows: int):
    """The resolved training fast path of ``args`` (its four flags) on ``device``; user errors exit 1."""
    from utils.scaffold.training import fast_path as checked_fast_path

    return checked_fast_path(device, args.precision, args.train_precision, args.compile, args.prefetch,
                             args.resident, cache_bytes=cache_rows * 256 * 64 * 64 * 2)


def at_largest_batch(settings: dict, device, data: TrainingData, prompt_type: str, seed: int) -> tuple[dict, str]:
    """(settings, what was done) for --largest-batch: on a GPU the largest power-of-two batch whose step fits
    (:func:`utils.train.decoder_step.largest_decoder_batch`), lr scaled linearly from the asked batch
    (:func:`utils.train.fastpath.scaled_lr`, SGD); a CPU keeps both."""
    from utils.train.decoder_step import largest_decoder_batch
    from utils.train.fastpath import scaled_lr

    if device.type != "cuda":
        return settings, "--largest-batch: a CPU gains nothing from larger batches; keeping --batch-size"
    asked, lr = settings["batch_size"], settings["learning_rate"]
    batch = largest_decoder_batch(data.caches, data.train, prompt_type, seed, data.fast.train_precision, asked,
                                  data.resident)
    scaled = scaled_lr(lr, asked, batch, "sgd")
    return dict(settings, batch_size=batch, learning_rate=scaled), (
        f"--largest-batch: batch {batch}, lr {scaled:g} (linear scaling from batch {asked}, lr {lr:g})")


def original_results(args, exp, prompt_types, val_samples) -> tuple[dict, str, dict]:
    """Zero-shot mDice per prompt: Task 1's results when they match this model, data, split, seed and precision,
    for the prompt types Task 1 scored; the others (a type Task 1 does not run, e.g. propagated_box) scored here
    with the same code. Also returns the per-sample records {prompt: [(case, organ, dice)]} the tables' intervals
    need."""
    from utils.core.io import read_json
    from utils.eval.bootstrap import triples
    from utils.eval.segmentation import evaluate_prompt
    from utils.scaffold.results import scored_alike

    path = args.results / "task1" / "metrics.json"
    summaries, records, read = {}, {}, []
    if path.is_file():
        task1 = read_json(path)
        meta = task1.get("provenance", {})
        if (scored_alike(meta, exp.store, exp.model, args.seed, "val", args.precision, args.encoder_precision)
                and not meta.get("multimask_output") and not meta.get("finetuned")):
            for p in prompt_types:
                same_jitter = p != "jittered_box" or meta.get("box_jitter", DEFAULT_BOX_JITTER_PX) == args.box_jitter
                if p in task1["prompts"] and p in task1.get("records", {}) and same_jitter:
                    summaries[p], records[p] = task1["prompts"][p], task1["records"][p]
                    read.append(p)
    missing = [p for p in prompt_types if p not in summaries]
    if missing:
        print(f"zero-shot results for {', '.join(missing)} (this model/data/split) not in results/task1: computing them")
    for p in missing:
        summary, sample_records = evaluate_prompt(exp.cache, val_samples, p, seed=args.seed,
                                                  batch_size=args.decode_batch, precision=args.precision,
                                                  box_jitter=args.box_jitter)
        summaries[p], records[p] = summary, triples(sample_records)
    parts = [f"read from {path}"] if read else []
    if missing:
        parts.append("computed by finetune_task2.py (same evaluation code as Task 1)"
                     + (f" for {', '.join(missing)}" if read else ""))
    source = "; ".join(parts)
    return ({p: summaries[p] for p in prompt_types}, source, {p: records[p] for p in prompt_types})


def task2_results(args, exp, data: TrainingData, outcomes: dict, original: tuple[dict, str, dict],
                  run_settings: Sequence[str]) -> dict:
    """finetune_task2.py's results/task2/metrics.json: each prompt's best checkpoint scored (``outcomes``), the
    zero-shot scores (``original``: :func:`original_results`' three), per-sample records; ``run_settings``: the
    names of the flags that make a run."""
    from utils.scaffold.results import provenance, results_header

    originals, original_source, original_records = original
    meta = provenance(exp.store, exp.model, exp.device, args.seed, "val", precision=args.precision,
                      encoder_precision=args.encoder_precision, n_slices=len(exp.cache.index.rows_for("val")),
                      preset=args.preset, runs={p: o["run"].record for p, o in outcomes.items()},
                      box_jitter=args.box_jitter, training_fast_path=data.fast.record())
    return results_header(
        meta, n_slices=meta["n_slices"], preset=args.preset,
        settings={"epochs": args.epochs, **{k: getattr(args, k) for k in run_settings}, "fast_path": data.fast.record(),
                  "val_samples": len(data.val), "val_samples_per_epoch": len(data.val_epoch)},
        prompts={p: o["best"] for p, o in outcomes.items()}, original=originals, original_source=original_source,
        provenance=meta,
        # per sample (case, organ, dice), paired by position, for the tables' bootstrap intervals
        records={"original": original_records, "finetuned": {p: o["records"] for p, o in outcomes.items()}},
        timing={"encode_seconds": round(data.encode_seconds, 2),
                "seconds_per_epoch": {p: o["seconds_per_epoch"] for p, o in outcomes.items()}})
