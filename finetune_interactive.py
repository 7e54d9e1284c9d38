"""Interactive fine-tuning: ONE prompt encoder + mask decoder trained on simulated correction sessions.

    python finetune_interactive.py --preset quick            # make reproduce's run (minutes on a CPU)
    python finetune_interactive.py --preset quick --init task2   # start from Task 2's bound-box decoder
    python finetune_interactive.py --rounds 8 --box-jitter 20 --mask-feedback 0.5 --device cuda
    python finetune_interactive.py --preset quick --resume   # continue an interrupted run with the same settings
    python interactive_task1.py --preset quick --finetuned interactive   # then score it like every decoder

The image encoder is frozen and never runs in the loop: embeddings come from the cache (Task 2's
training slices). Per (slice, organ) sample and epoch one session (utils/train/interactive.py): a start
prompt (a box with each side jittered by up to --box-jitter px, with probability --box-fraction, else one
positive point), then --rounds correction rounds; each round's click is drawn under no_grad uniformly
from the current error (positive where the organ is missed, negative where the mask leaks: SAM's and
SAM-Med2D's training rule, not the evaluation's centre rule), clicks accumulate, and with probability
--mask-feedback (micro-sam's 0.5) the previous round's low-res logits, detached, are the mask input.
Single-mask output at every round (what the evaluation decodes); the loss (--loss: the study's Dice, or
Dice + BCE as MedSAM) is averaged over samples and rounds.

The checkpoint is chosen on the TRAINING split, never on the validation volumes the report scores: each
epoch ends with the evaluation's protocol (tight box and central point starts, --monitor-clicks centre
clicks, mask input on) on a fixed subset of --monitor-per-organ training samples per organ; the monitor
is the mean of the two starts' Dice AUC (utils/eval/auc.py).

The run lives in checkpoints/interactive/<model>/interactive/run-<key>/ (run.json, best.pt, last.pt,
history.json); the key covers the model, checkpoint, store, seed, precision, the optimiser settings, the
start decoder and every session setting (rounds, start mix, jitter, mask feedback, loss). Writes
results/interactive_training/{history.json, curves.png, metrics.json, config.json}.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from utils.scaffold.config import one_of, parse_with_presets  # noqa: E402
from utils.scaffold.flags import new_task_parser  # noqa: E402
from utils.inference.training_clicks import CLICK_SAMPLINGS  # noqa: E402
from utils.train.interactive import LOSSES, ROUND_WEIGHTINGS  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Hyperparameters: edit here, or override any of them with the flag of the same name (--rounds 8).
HYPERPARAMETERS = {
    "PRESET": ("paper", "paper (the constants here), quick (make reproduce, minutes on a CPU) or long (the quick "
                        "recipe with 12x the sessions, ~20 min on 2 CPU cores; docs/interactive-training.md)"),
    "EPOCHS": (20, "training epochs (not part of the run key: --resume --epochs N extends a run)", "positive"),
    "OPTIMIZER": ("adam", "adam or sgd (momentum --momentum)"),
    "LEARNING_RATE": (1e-4, "learning rate (Adam 1e-3 was unstable in the prototype the issue reports)", "positive"),
    "MOMENTUM": (0.9, "SGD momentum (sgd only)", "fraction"),
    "WEIGHT_DECAY": (0.0, "weight decay"),
    "BATCH_SIZE": (16, "sessions per optimiser step", "positive"),
    "SAMPLES_PER_EPOCH": (0, "(slice, organ) sessions per epoch; 0 = every training sample"),
    "ROUNDS": (8, "correction rounds after the start prompt (SAM-Med2D, micro-sam: 8)"),
    "BOX_FRACTION": (0.5, "share of sessions that start from a box (the rest: one positive point), in [0, 1]"),
    "BOX_JITTER": (10, "each side of a start box moves by up to this many slice px (0 = the tight box)"),
    "MASK_FEEDBACK": (0.5, "probability a round gets the previous low-res logits as mask input (micro-sam), in [0, 1]"),
    "LOSS": ("dice", "dice (the study's and Task 2's) or dice_bce (MedSAM's Dice + binary cross-entropy)"),
    # Clicks that work (issue 34; docs/interactive-training.md, "Clicks that work"): where training clicks go,
    # which rounds a session has, what the loss weighs.
    "CLICK_SAMPLING": ("uniform", "where a training click goes: uniform over the error (SAM), inner_half (RITM: "
                                  "deeper than half the larger error's maximum depth) or center (the evaluation's "
                                  "rule)", CLICK_SAMPLINGS),
    "TRUTH_CLICK_SHARE": (0.0, "share of training clicks drawn as a positive point inside the organ (SAM 2: ~0.1)",
                          "fraction"),
    "NO_CLICK_ROUNDS": (0, "rounds after the click rounds that decode again with the mask and no new click (SAM: 2)"),
    "RANDOM_ROUNDS": (False, "each batch draws its number of click rounds in 0..--rounds (RITM)"),
    "ROUND_WEIGHTING": ("flat", "the loss's weight per round: flat, or linear (round r weighs r + 1, CFR-ICL)",
                        ROUND_WEIGHTINGS),
    "CLICK_LOSS_WEIGHT": (0.0, "weight of a binary cross-entropy term on the pixels within --click-radius px of the "
                               "clicks (0 = off)"),
    "CLICK_RADIUS": (5, "px around each click that --click-loss-weight weighs"),
    "INIT": ("pretrained", "the decoder to start from: pretrained (the model's own) or task2 (the newest Task 2 "
                           "bound-box run for this model and store; none is an error)"),
    "MONITOR_PER_ORGAN": (2, "training samples per organ the per-epoch monitor scores (checkpoint choice)",
                          "positive"),
    "MONITOR_CLICKS": (5, "centre clicks in the monitor's sessions", "positive"),
    "TRAIN_PRECISION": ("same", "training forward autocast: same (= --precision), auto (bf16 on a CPU with AMX, else fp32; fp16 on a GPU), fp32, bf16, fp16"),
    "PREFETCH": ("off", "prepare the next batch in a background thread: auto (GPU), on, off"),
    "DECODE_BATCH": (0, "samples decoded together in the monitor's rounds; 0 = auto (8 on a CPU, 64 on a GPU)"),
}
PRESETS = {
    "paper": {},
    # make reproduce: sized to its budget on 2 CPU cores (docs/interactive-training.md): a session costs
    # ~(rounds + 1) decoder forward + backward passes, ~5.7 per second in fp32 on this project's CPU without
    # AMX, where bf16 autocast is slower (4.1/s; benchmarks/run.py --sections interactive).
    # Mask fed back at every round (SAM's rule; the evaluation gives it at every round): of five variants
    # tried at this size, it scored best on the TRAINING monitor (docs/interactive-training.md).
    "quick": {"epochs": 2, "samples_per_epoch": 32, "rounds": 4, "batch_size": 8, "mask_feedback": 1.0,
              "monitor_per_organ": 1},  # 48 sessions and 2 monitor samples per organ until 2026-12-04 (budget)
    # The longer run the docs report: the quick recipe, 6 x 192 sessions (measured once, docs/interactive-training.md).
    "long": {"epochs": 6, "samples_per_epoch": 192, "rounds": 4, "batch_size": 8, "mask_feedback": 1.0},
}
# What makes the run that run (utils.scaffold.runs): everything above but the epoch count and the decode
# batch; the session settings go in through utils.train.interactive.interactive_identity.
RUN_SETTINGS = ("optimizer", "learning_rate", "momentum", "weight_decay", "batch_size", "samples_per_epoch",
                "monitor_per_organ", "monitor_clicks")
OPTIMIZERS = ("adam", "sgd")
INITS = ("pretrained", "task2")
MONITOR_STARTS = ("bound_box", "one_central_point")
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None):
    parser = new_task_parser(__doc__, HYPERPARAMETERS, split=None)
    parser.add_argument("--resume", action="store_true", help="continue the run with today's settings")
    parser.add_argument("--checkpoint-dir", type=Path, default=ROOT / "checkpoints" / "interactive",
                        help="root of the run folders (default checkpoints/interactive)")
    parser.add_argument("--finetuned-dir", type=Path, default=ROOT / "checkpoints" / "finetuned",
                        help="where Task 2 runs live, for --init task2 (default checkpoints/finetuned)")
    return parse_with_presets(parser, argv, PRESETS, checks={
        "optimizer": one_of(OPTIMIZERS), "loss": one_of(LOSSES), "init": one_of(INITS)})


def session_settings(args):
    """The sessions' hyperparameters (utils.train.interactive.InteractiveSettings); a bad value exits 1."""
    from utils.scaffold.session import fail
    from utils.train.interactive import InteractiveSettings

    try:
        return InteractiveSettings(rounds=args.rounds, box_fraction=args.box_fraction, box_jitter=args.box_jitter,
                                   mask_feedback=args.mask_feedback, loss=args.loss, click_sampling=args.click_sampling,
                                   truth_click_share=args.truth_click_share, no_click_rounds=args.no_click_rounds,
                                   random_rounds=args.random_rounds, round_weighting=args.round_weighting,
                                   click_loss_weight=args.click_loss_weight, click_radius=args.click_radius)
    except ValueError as exc:
        raise fail(f"--{str(exc).replace('_', '-')}") from exc


def starting_decoder(args, exp):
    """(trainable {"prompt_encoder", "mask_decoder"}, record of where it came from) for --init."""
    from utils.core.checkpoints import TASK2
    from utils.scaffold.runs import find_handoff
    from utils.scaffold.session import fail, wanted_data
    from utils.train.decoder_step import trainable_decoder

    trainable = trainable_decoder(exp.model)
    if args.init == "pretrained":
        return trainable, {"init": "pretrained"}
    handoff, source = find_handoff("auto", args.finetuned_dir, "bound_box", wanted_data(exp), kind=TASK2)
    if handoff is None:
        raise fail(f"--init task2: {source}; run finetune_task2.py --prompts bound_box first (same --model, "
                   "--checkpoint and --slices), or use --init pretrained")
    trainable.load_state_dict(handoff.state["model"])
    print(f"starting from {source}")
    return trainable, {"init": "task2", "init_run": handoff.record}


def make_optimizer(args, trainable):
    import torch

    if args.optimizer == "sgd":
        return torch.optim.SGD(trainable.parameters(), lr=args.learning_rate, momentum=args.momentum,
                               weight_decay=args.weight_decay)
    return torch.optim.Adam(trainable.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)


def make_monitor(args, exp, trainable, samples):
    """validate(epoch) -> the evaluation's sessions on the monitor's training samples, both starts."""
    from utils.eval.sessions import Protocol, run_sessions
    from utils.inference.decoder import CacheDecoder

    protocol = Protocol(clicks=args.monitor_clicks, rule="center", mask_input=True, seed=args.seed,
                        batch_size=args.decode_batch)

    def validate(epoch):
        decoder = CacheDecoder(exp.cache, trainable["prompt_encoder"], trainable["mask_decoder"], args.precision)
        curves = {s: run_sessions(exp.cache, samples, s, decoder, protocol).summary() for s in MONITOR_STARTS}
        out = {"monitor_dice_auc": sum(c["dice_auc"] for c in curves.values()) / len(curves)}
        out.update({f"{s}_dice_per_click": c["dice_per_click"] for s, c in curves.items()})
        out.update({f"{s}_click_corrected": c["click_response"]["corrected_share"] for s, c in curves.items()})
        print("  monitor (training samples): " + "; ".join(
            f"{s} {' '.join(f'{d:.3f}' for d in c['dice_per_click'])} (clicked pixel corrected "
            f"{_share(c['click_response']['corrected_share'])})" for s, c in curves.items()))
        return out

    return validate


def _share(value) -> str:
    return "-" if value is None else f"{value:.0%}"


def run_identity(args, exp, settings, fast, start: dict) -> dict:
    """What makes the run (utils.scaffold.runs): data, model, seed, precisions, every setting, the start decoder."""
    from utils.scaffold.runs import identity_of
    from utils.train.interactive import interactive_identity

    return identity_of("interactive", exp, "interactive", args.seed, args.precision, args.encoder_precision,
                       **{k: getattr(args, k) for k in RUN_SETTINGS}, fast_path=fast.record(), **start,
                       **interactive_identity(settings))


def train(args, exp, train_samples, monitor_samples):
    """Train in the keyed run folder; return (run, utils.scaffold.training.TrainedRun, fast path, start record)."""
    import torch

    from utils.scaffold.results import config_record
    from utils.scaffold.training import fast_path, open_training_run, train_in_run
    from utils.train.fastpath import grad_scaler
    from utils.train.interactive import make_interactive_step
    from utils.train.loop import LoopConfig

    settings = session_settings(args)
    fast = fast_path(exp.device, args.precision, args.train_precision, "off", args.prefetch, "off")
    torch.manual_seed(args.seed)
    trainable, start = starting_decoder(args, exp)
    run = open_training_run(args.checkpoint_dir / exp.model.name / "interactive",
                            run_identity(args, exp, settings, fast, start), args.resume)
    step = make_interactive_step([exp.cache], settings, args.seed, trainable, fast.train_precision)
    loop = LoopConfig(epochs=args.epochs, batch_size=args.batch_size, samples_per_epoch=args.samples_per_epoch,
                      seed=args.seed, monitor="monitor_dice_auc", run=run, progress=not args.no_progress,
                      extra=dict(config_record(args), task="interactive", fast_path=fast.record()),
                      prepare=step.prepare, prefetch=fast.prefetch, scaler=grad_scaler(fast, exp.model.device))
    trained = train_in_run("interactive training", trainable, make_optimizer(args, trainable), train_samples, step,
                           make_monitor(args, exp, trainable, monitor_samples), loop, args.resume)
    return run, trained, fast, start


def write_outputs(args, exp, run, trained, fast, start, n_train, n_monitor) -> Path:
    """results/interactive_training/: the curves, history and a metrics.json saying which run made them."""
    from utils.scaffold.results import config_record, provenance, results_header, write_results, write_training_curves

    history = trained.history
    out = args.results / "interactive_training"
    curves = {"train_loss": history["train_loss"], "train_session_dice": history["train_metric"],
              "monitor_dice_auc": [v["monitor_dice_auc"] for v in history["val"]]}
    write_training_curves(out, run, history, curves, [
        ("train_loss", "training loss (mean over rounds)"), ("train_session_dice", "training Dice, mean over rounds"),
        ("monitor_dice_auc", "monitor Dice AUC (training samples)")],
        f"Interactive fine-tuning ({exp.model.name}, {exp.store.description}, preset {args.preset})")
    meta = provenance(exp.store, exp.model, exp.device, args.seed, "train", precision=args.precision,
                      encoder_precision=args.encoder_precision, preset=args.preset, runs={"interactive": run.record},
                      training_fast_path=fast.record())
    best = history["val"][history["best_epoch"] - 1] if history["best_epoch"] else {}
    results = results_header(meta, preset=args.preset, run=run.record, checkpoint_path=str(run.best), **start,
                             settings=dict(run.identity), training_samples=n_train, monitor_samples=n_monitor,
                             best_epoch=history["best_epoch"], monitor_at_best=best, provenance=meta,
                             timing={"seconds_per_epoch": trained.seconds_per_epoch})
    write_results(out, results, {}, config_record(args))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from utils.eval.sessions import per_organ_subset
    from utils.scaffold.session import fail, open_experiment

    exp = open_experiment(args)
    exp.model.sam.requires_grad_(False)  # frozen: only the trainable copy learns
    index = exp.cache.index
    train_rows = index.rows_for("train")
    if not train_rows:
        raise fail(f"{exp.store.path}: interactive training needs train slices; the store has none")
    exp.cache.ensure(train_rows, batch_size=args.encode_batch, progress=not args.no_progress)
    samples = index.samples(train_rows)
    monitor = per_organ_subset(samples, args.monitor_per_organ, args.seed)
    print(f"{exp.store.description}: {len(samples)} training samples (a session each per epoch), the monitor on {len(monitor)} of "
          f"them; {args.rounds} rounds, box share {args.box_fraction}, jitter {args.box_jitter} px, mask feedback "
          f"{args.mask_feedback}, loss {args.loss}, clicks {args.click_sampling} (truth share {args.truth_click_share}), "
          f"{args.no_click_rounds} rounds without a click, random rounds {args.random_rounds}, rounds weighted "
          f"{args.round_weighting}, click loss {args.click_loss_weight} within {args.click_radius} px, "
          f"{args.optimizer} lr {args.learning_rate:g}; preset {args.preset}")
    run, trained, fast, start = train(args, exp, [(0, r, o) for r, o in samples], monitor)
    out = write_outputs(args, exp, run, trained, fast, start, len(samples), len(monitor))
    history = trained.history
    print(f"best epoch {history['best_epoch']} (monitor Dice AUC {history['best']:.4f}); {trained.seconds_per_epoch} "
          f"s per epoch; checkpoint {run.best}")
    print(f"wrote {out / 'metrics.json'}; score it: python interactive_task1.py --finetuned {run.path}")
    return 0


if __name__ == "__main__":
    from utils.scaffold.boundary import run_script  # the one error boundary (--debug: tracebacks)

    sys.exit(run_script(main))
