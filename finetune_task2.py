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

`--prompts propagated_box` trains the propagation decoder (segmentation_3d.py --finetuned propagation) on the boxes
propagation carries, starting from Task 2's bound_box decoder when one exists (docs/3d.md).

Each prompt type's run lives in a keyed folder checkpoints/finetuned/<model>/<prompt>/run-<key>/ (run.json,
best.pt, last.pt, history.json); the key covers the model, checkpoint, slice store, prompt, resolved
hyperparameters, seed and precision, so --resume continues only a run with today's settings. Writes
results/task2/{<prompt>/history.json, <prompt>/curves.png, metrics.json, table2.md, table3.md, config.json}.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from utils.inference.prompts import DEFAULT_BOX_JITTER_PX, parse_prompt_types  # noqa: E402
from utils.scaffold.config import parse_with_presets  # noqa: E402
from utils.scaffold.flags import new_task_parser  # noqa: E402

if TYPE_CHECKING:
    from utils.train.task2_data import TrainingData

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
    # The training fast path (utils/train/fastpath.py; docs/speed-and-memory.md): how a step is computed, not what it sees.
    # The study's exact path is same/off/off/off; every value is in the run key and the results.
    "TRAIN_PRECISION": ("same", "training forward autocast: same (= --precision), auto (bf16 on a CPU with AMX, else fp32; fp16 + GradScaler on a GPU), fp32, bf16, fp16"),
    "COMPILE": ("off", "torch.compile the decoder for training: auto (GPU only), on, off; falls back to eager, saying so"),
    "PREFETCH": ("off", "prepare the next batch (targets, prompts, embeddings) in a background thread: auto (GPU), on, off"),
    "RESIDENT": ("off", "hold the whole embedding cache in GPU memory when it fits in half the free memory: auto, on, off"),
    "LARGEST_BATCH": (False, "GPU: train at the largest power-of-two batch (<= 1024) a step fits, lr scaled linearly (SGD)"),
}
PRESETS = {
    "paper": {},  # exactly the constants above
    # 2 CPU cores decode ~20 prompts/s and train ~7 samples/s: two short epochs per prompt type (three until
    # 2026-12-04, cut for make reproduce's budget), the best epoch picked on 32 fixed validation samples, then
    # scored on the whole split. lr 0.01, not 0.1: on the phantom lr 0.1 collapsed LiteMedSAM's point-prompt
    # decoder to empty masks. No augmented views (an encoder pass each); training autocast 'auto' (bf16 only on
    # a CPU with AMX, where it is 1.43x faster). Every choice's measurements: docs/runs-and-presets.md.
    "quick": {"epochs": 2, "learning_rate": 0.01, "batch_size": 16, "samples_per_epoch": 64, "val_samples": 32,
              "aug_views": 0, "train_precision": "auto"},
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
    return parse_with_presets(parser, argv, PRESETS, checks={"prompts": parse_prompt_types})  # bad: exit 2


def run_settings(args, exp, data: "TrainingData", prompt_type: str) -> dict:
    """RUN_SETTINGS' values; --largest-batch: on a GPU the largest batch whose step fits, lr scaled with it."""
    from utils.train.task2_data import at_largest_batch

    settings = {k: getattr(args, k) for k in RUN_SETTINGS}
    if args.largest_batch:
        settings, note = at_largest_batch(settings, exp.device, data, prompt_type, args.seed)
        print(note)
    return settings


def open_prompt_run(args, exp, data: "TrainingData", prompt_type: str, settings: dict):
    """(the keyed run folder of this prompt's run (checked resume; torchrun: rank 0 makes it), the weights it starts
    from: None = the pre-trained decoder; utils.train.task2_data.start_weights, in the run key)."""
    from utils.inference.prompts import draw_settings
    from utils.scaffold.runs import identity_of
    from utils.scaffold.training import open_training_run
    from utils.train.task2_data import start_weights

    state, start = start_weights(args, exp, prompt_type)
    identity = identity_of("task2", exp, prompt_type, args.seed, args.precision, args.encoder_precision,
                           **settings, fast_path=data.fast.record(), **start,
                           **draw_settings(prompt_type, args.box_jitter))
    return open_training_run(args.checkpoint_dir / exp.model.name / prompt_type, identity, args.resume,
                             shared=True), state


def finetune_prompt(args, exp, data: "TrainingData", prompt_type: str, config: dict) -> dict:
    """Train one prompt type's decoder in its run folder; return its scored best checkpoint and history."""
    import torch

    from utils.eval.bootstrap import triples
    from utils.eval.segmentation import evaluate_prompt
    from utils.inference.decoding import predict_masks_paired
    from utils.scaffold.runs import load_checkpoint
    from utils.scaffold.training import train_in_run
    from utils.train.decoder_step import make_step, trainable_decoder
    from utils.train.fastpath import CompiledOrEager, grad_scaler
    from utils.train.loop import LoopConfig

    settings = run_settings(args, exp, data, prompt_type)
    run, start = open_prompt_run(args, exp, data, prompt_type, settings)
    torch.manual_seed(args.seed)
    trainable = trainable_decoder(exp.model, start)
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
                      prepare=step.prepare, prefetch=fast.prefetch, scaler=grad_scaler(fast, exp.model.device))
    trained = train_in_run(prompt_type, trainable, optimizer, data.train, step, validate, loop, args.resume)
    history = trained.history
    # chosen on the per-epoch samples, scored on the whole split with per-sample records (for the intervals)
    trainable.load_state_dict(load_checkpoint(run.best)["model"])
    best, records = score(data.val)
    if paired.note != "eager (compile off)":
        print(f"{prompt_type}: decoder {paired.note}")
    return {"best": dict(best, best_epoch=history["best_epoch"], checkpoint=str(run.best), run=run.record),
            "records": triples(records),
            "history": history, "run": run, "seconds_per_epoch": trained.seconds_per_epoch}


def write_prompt_outputs(out: Path, prompt_type: str, outcome: dict, title: str) -> None:
    """The latest run's curves and history, copied into results/ for the report (with the run's key)."""
    from utils.scaffold.results import write_training_curves

    history = outcome["history"]
    curves = {"train_loss": history["train_loss"], "train_dice": history["train_metric"],
              "val_dice": [v["val_mDice"] for v in history["val"]]}
    write_training_curves(out / prompt_type, outcome["run"], history, curves, [
        ("train_loss", "training loss"), ("train_dice", "training dice"), ("val_dice", "validation dice")], title)


def finetune_all(args, exp, data: "TrainingData", prompt_types: list[str], originals: dict, config: dict) -> dict:
    """{prompt: outcome} in the order asked for. --parallel prompts under torchrun: the prompt types dealt to
    the ranks, each trained by one rank alone (which writes its curves); every rank gets every outcome."""
    from utils.core import distributed
    from utils.inference.prompts import PROMPT_TITLES

    def finetune(prompt_type: str) -> dict:
        print(f"\n== {PROMPT_TITLES[prompt_type]}: zero-shot val mDice {originals[prompt_type]['mDice']:.4f}")
        outcome = finetune_prompt(args, exp, data, prompt_type, config)
        if distributed.is_main():
            write_prompt_outputs(args.results / "task2", prompt_type, outcome, f"Task 2, {PROMPT_TITLES[prompt_type]} "
                                 f"({exp.model.name}, {exp.store.description}, preset {args.preset})")
        return outcome

    if args.parallel == "prompts":
        return distributed.deal(finetune, prompt_types)
    return {prompt_type: finetune(prompt_type) for prompt_type in prompt_types}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from utils.core import distributed
    from utils.report.tables import mdice_table, table2, table3, titled
    from utils.scaffold.results import config_record, write_results
    from utils.scaffold.session import open_experiment
    from utils.train.task2_data import original_results, prepare_data, task2_results

    prompt_types = parse_prompt_types(args.prompts)  # already checked by parse_args (bad values exit 2)
    exp = open_experiment(args)
    exp.model.sam.requires_grad_(False)  # frozen: only the trainable copies learn
    data = prepare_data(args, exp)
    print(f"{exp.store.description}: {len(data.train)} training samples ({1 + args.aug_views} view(s) per slice), "
          f"{len(data.val)} validation samples ({len(data.val_epoch)} per epoch); preset {args.preset}")
    config = config_record(args)
    originals, original_source, original_records = original_results(args, exp, prompt_types, data.val)
    outcomes = finetune_all(args, exp, data, prompt_types, originals, config)
    if not distributed.is_main():  # torchrun: rank 0 writes the results
        return 0
    results = task2_results(args, exp, data, outcomes, (originals, original_source, original_records), RUN_SETTINGS)
    out = args.results / "task2"
    tables = {"table2.md": titled("Table 2: mDice of different prompts after fine-tuning", table2(results))}
    if table3(results):
        tables["table3.md"] = titled("Table 3: performance comparison", table3(results))
    else:
        (out / "table3.md").unlink(missing_ok=True)  # an earlier run's Table 3 does not describe this run
    write_results(out, results, tables, config)
    print(f"\n{mdice_table(results['prompts'])}")
    print(f"seconds per epoch: {results['timing']['seconds_per_epoch']}\nwrote {out / 'table2.md'} and "
          f"{out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    from utils.scaffold.boundary import run_script  # the one error boundary (--debug: tracebacks)

    sys.exit(run_script(main))
