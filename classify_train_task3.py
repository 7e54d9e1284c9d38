"""Task 3 (training): teach the mask decoder to name the organ it segments.

    python classify_train_task3.py --preset quick       # LiteMedSAM on the phantom store, minutes on a CPU
    python classify_train_task3.py --model vit_h --slices data/slices_btcv   # the study's settings, GPU

Starts from Task 2's fine-tuned prompt encoder + mask decoder for the chosen prompt type when a Task 2
run exists for the same model, checkpoint and slice store (--finetuned auto; PATH picks one, and one
trained on other data is refused unless --allow-other-data), else from the pre-trained ones, and says
which. Wraps the decoder in modified_classifier.ClassifyingMaskDecoder and trains only its two-way
transformer, class token and class_prediction_head (Adam, cross-entropy on the organ id) from the cached
embeddings, on the training split, validating on the validation split (there is no --split). Because
the transformer is shared with the mask path, the validation mDice is measured before and after.

The run lives in checkpoints/classifier/<model>/<prompt>/run-<key>/ (keyed by model, data, prompt,
starting weights, hyperparameters, seed, precision). Writes results/task3/{history.json, curves.png,
train_metrics.json, config.json}. Then run classify_val_task3.py.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from utils.scaffold.config import parse_with_presets  # noqa: E402
from utils.scaffold.flags import add_finetuned_args, new_task_parser  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Hyperparameters: the study's settings are the `paper` preset (these constants). Edit here, or
# override any with the flag of the same name; a typed flag always beats the preset.
HYPERPARAMETERS = {
    "PRESET": ("paper", "paper (the constants here: the study's settings) or quick (fits the CPU budget)"),
    "PROMPT": ("one_central_point", "prompt type that locates the organ (the study's Table 4 uses point prompts)"),
    "EPOCHS": (50, "training epochs (not part of the run key: --resume --epochs N extends a run)", "positive"),
    "LEARNING_RATE": (1e-5, "Adam learning rate (of the two-way transformer; also of the class head unless HEAD_LEARNING_RATE)", "positive"),
    "HEAD_LEARNING_RATE": (0.0, "Adam learning rate of the new class token and class head; 0 = LEARNING_RATE (the study: one rate)",
                           "non_negative"),
    "BATCH_SIZE": (32, "samples per step", "positive"),
    "SAMPLES_PER_EPOCH": (0, "(slice, organ) samples per epoch; 0 = all"),
    "DECODE_BATCH": (0, "prompts per decoder call in validation; 0 = auto (8 on a CPU, 64 on a GPU)"),
    # The training fast path (utils/train/fastpath.py), as in finetune_task2.py: same/off/off/off is the exact path.
    "TRAIN_PRECISION": ("same", "training forward autocast: same (= --precision), auto (bf16 on a CPU with AMX, else fp32; fp16 + GradScaler on a GPU), fp32, bf16, fp16"),
    "PREFETCH": ("off", "prepare the next batch (prompts, embeddings, targets) in a background thread: auto (GPU), on, off"),
    "RESIDENT": ("off", "hold the embedding cache in GPU memory when it fits in half the free memory: auto, on, off"),
}
PRESETS = {
    "paper": {},
    # Two long epochs on a CPU (docs/runs-and-presets.md, "Choosing the quick presets"). One rate for all fails both ways:
    # 1e-5 leaves the new head at chance (val accuracy 0.079), 1e-4 reaches 0.49, 3e-4 reaches 0.70 but
    # cuts the point-prompt mDice 0.64 -> 0.35 (the transformer is shared with the mask path). So the
    # shared transformer keeps the study's 1e-5 and only the new class token and head learn fast (3e-3,
    # many small steps: batch 8, 2 x 320 samples (512 until 2026-12-04), one validation pass per epoch); training autocast 'auto'
    # (bf16 on a CPU with AMX, 1.3x there; fp32 without AMX, where bf16 is slower: benchmarks/run.py).
    "quick": {"epochs": 2, "learning_rate": 1e-5, "head_learning_rate": 3e-3, "batch_size": 8,
              "samples_per_epoch": 320, "train_precision": "auto"},
}
RUN_SETTINGS = ("learning_rate", "head_learning_rate", "batch_size", "samples_per_epoch")
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None):
    parser = new_task_parser(__doc__, HYPERPARAMETERS, split=None)
    add_finetuned_args(parser, default="auto")
    parser.add_argument("--resume", action="store_true", help="continue the run with today's settings")
    parser.add_argument("--checkpoint-dir", type=Path, default=ROOT / "checkpoints" / "classifier",
                        help="root of the classifier run folders (default checkpoints/classifier)")
    from utils.scaffold.flags import one_prompt_type

    return parse_with_presets(parser, argv, PRESETS, checks={"prompt": one_prompt_type})  # bad values: exit 2


def build_classifier(args, exp, decoder):
    """(module to train and checkpoint, classifier, prompt encoder, mask decoder), seeded, frozen but for Task 3's parts."""
    import torch

    from modified_classifier import ClassifyingMaskDecoder, classifier_module

    for p in exp.model.sam.parameters():
        p.requires_grad_(False)
    prompt_encoder = decoder.prompt_encoder or exp.model.sam.prompt_encoder
    mask_decoder = decoder.mask_decoder or exp.model.sam.mask_decoder
    torch.manual_seed(args.seed)
    classifier = ClassifyingMaskDecoder(mask_decoder).to(exp.device)
    classifier.freeze_for_task3()
    # The prompt encoder rides along in the checkpoint (frozen) so the validation script can rebuild it.
    module = classifier_module(prompt_encoder, classifier)
    return module, classifier, prompt_encoder, mask_decoder


def open_classifier_run(args, exp, prompt_type: str, decoder, fast):
    """The keyed run folder of this classifier run (checked resume), and the config saved with it."""
    from utils.scaffold.results import config_record
    from utils.scaffold.runs import identity_of
    from utils.scaffold.training import open_training_run

    identity = identity_of("task3", exp, prompt_type, args.seed, args.precision, args.encoder_precision,
                           starting_weights=decoder.handoff.run_key if decoder.handoff else "pre-trained",
                           **{k: getattr(args, k) for k in RUN_SETTINGS}, fast_path=fast.record())
    run = open_training_run(args.checkpoint_dir / exp.model.name / prompt_type, identity, args.resume,
                            shared=True)  # torchrun: rank 0 makes the folder
    config = dict(config_record(args), task="task3", prompt=prompt_type, fast_path=fast.record(),
                  starting_weights=decoder.source, starting_run=decoder.record,
                  trained_on=exp.store.description)  # what segment_volume.py tells a user who names organs with it
    return run, config


def task2_score(args, exp, prompt_type: str, decoder) -> tuple[dict, str] | None:
    """(summary, source) of Task 2's own validation score of the very decoder Task 3 starts from, read
    from results/task2/metrics.json when it was scored on this store, model, split, seed and precision
    (the same evaluation code on the same samples, so scoring it again would repeat the same numbers);
    None otherwise, and Task 3 scores it itself."""
    from utils.scaffold.results import read_results, scored_alike

    path = args.results / "task2" / "metrics.json"
    if decoder.handoff is None or prompt_type == "jittered_box" or not path.is_file():
        return None
    metrics = read_results(path, "python finetune_task2.py")  # a damaged file: one error naming it
    meta, tuned = metrics.get("provenance", {}), metrics.get("prompts", {}).get(prompt_type) or {}
    same_weights = (tuned.get("run", {}).get("key") == decoder.handoff.run_key
                    and tuned.get("best_epoch") == decoder.handoff.epoch)
    if not (same_weights and scored_alike(meta, exp.store, exp.model, args.seed, "val", args.precision,
                                          args.encoder_precision)):
        return None
    return {"mDice": tuned["mDice"], "organs": tuned["organs"]}, f"read from {path}"


def write_training_outputs(args, exp, prompt_type: str, decoder, fast, run, config, history, summary: dict) -> Path:
    """Curves (run folder and results/task3), history.json and train_metrics.json with the run's provenance."""
    from utils.inference.prompts import PROMPT_TITLES
    from utils.scaffold.results import provenance, write_results, write_training_curves

    out = args.results / "task3"
    curves = {"train_loss": history["train_loss"], "train_accuracy": history["train_metric"],
              "val_accuracy": [v["val_accuracy"] for v in history["val"]]}
    title = f"Task 3, {PROMPT_TITLES[prompt_type]} ({exp.model.name}, {exp.store.description}, preset {args.preset})"
    write_training_curves(out, run, history, curves, [("train_loss", "training loss"), ("train_accuracy",
                          "training accuracy"), ("val_accuracy", "validation accuracy")], title)
    meta = provenance(exp.store, exp.model, exp.device, args.seed, "val", precision=args.precision,
                      encoder_precision=args.encoder_precision, n_slices=len(exp.cache.index.rows_for("val")),
                      preset=args.preset, run=run.record, starting_weights=decoder.source,
                      starting_run=decoder.record, training_fast_path=fast.record())
    write_results(out, {"model": exp.model.name, "prompt": prompt_type, "preset": args.preset,
                        "starting_weights": decoder.source, **summary, "best_epoch": history["best_epoch"],
                        "best_val_accuracy": history["best"], "provenance": meta, "run": run.record,
                        "checkpoint": str(run.best)}, config=config, metrics_name="train_metrics.json")
    return out / "train_metrics.json"


def fit_classifier(args, exp, prompt_type: str, decoder, module, classifier, prompt_encoder, fast, val_samples):
    """Train the classifier in its keyed run folder; returns (run, config, utils.scaffold.training.TrainedRun)."""
    import torch

    from utils.eval.accuracy import accuracy_summary
    from utils.inference.classify import predict_classes
    from utils.scaffold.training import train_in_run
    from utils.train.classifier_step import make_class_step
    from utils.train.fastpath import ResidentEmbeddings, grad_scaler
    from utils.train.loop import LoopConfig

    cache = exp.cache
    optimizer = torch.optim.Adam(classifier.parameter_groups(args.learning_rate, args.head_learning_rate))
    resident = ResidentEmbeddings(cache, exp.device) if fast.resident else None
    step = make_class_step(cache, classifier, prompt_encoder, prompt_type, args.seed, fast.train_precision, resident)

    def validate(epoch):
        ordered, predicted = predict_classes(cache, classifier, val_samples, prompt_type, args.seed, args.decode_batch,
                                             args.precision, prompt_encoder)
        return {"val_accuracy": accuracy_summary([o for _, o in ordered], predicted)["weighted_average"]}

    run, config = open_classifier_run(args, exp, prompt_type, decoder, fast)
    loop = LoopConfig(epochs=args.epochs, batch_size=args.batch_size, samples_per_epoch=args.samples_per_epoch,
                      seed=args.seed, monitor="val_accuracy", run=run, progress=not args.no_progress, extra=config,
                      prepare=step.prepare, prefetch=fast.prefetch, scaler=grad_scaler(fast, exp.device))
    trained = train_in_run(f"Task 3 {prompt_type}", module, optimizer, cache.index.split_samples("train"), step,
                           validate, loop, args.resume)
    return run, config, trained


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from utils.core import distributed
    from utils.eval.segmentation import evaluate_prompt
    from utils.inference.prompts import PROMPT_TITLES, parse_prompt_types
    from utils.scaffold.runs import load_checkpoint
    from utils.scaffold.session import fail, open_decoders, open_experiment
    from utils.scaffold.training import fast_path

    try:
        prompt_type, = parse_prompt_types(args.prompt)
    except ValueError as exc:
        raise fail(f"--prompt takes one prompt type: {exc}") from exc
    exp = open_experiment(args)
    cache, index = exp.cache, exp.cache.index
    decoder = open_decoders(args, exp, [prompt_type])[prompt_type]
    print(f"starting weights: {decoder.source}")
    train_rows, val_rows = index.rows_for("train"), index.rows_for("val")
    if not train_rows or not val_rows:
        raise fail(f"{exp.store.path}: Task 3 needs train and val slices in the store")
    cache.ensure(train_rows + val_rows, batch_size=args.encode_batch, progress=not args.no_progress)
    val_samples = index.samples(val_rows)
    module, classifier, prompt_encoder, mask_decoder = build_classifier(args, exp, decoder)

    def mdice():
        return evaluate_prompt(cache, val_samples, prompt_type, seed=args.seed, batch_size=args.decode_batch,
                               prompt_encoder=prompt_encoder, mask_decoder=mask_decoder, precision=args.precision)[0]

    t0 = time.perf_counter()
    mdice_before, before_source = task2_score(args, exp, prompt_type, decoder) or (mdice(), "scored here")
    print(f"validation mDice with {PROMPT_TITLES[prompt_type]} before classification training: "
          f"{mdice_before['mDice']:.4f} ({before_source})")
    fast = fast_path(exp.device, args.precision, args.train_precision, "off", args.prefetch, args.resident,
                     cache_bytes=len(cache) * 256 * 64 * 64 * 2)
    run, config, trained = fit_classifier(args, exp, prompt_type, decoder, module, classifier, prompt_encoder, fast,
                                          val_samples)
    history = trained.history
    module.load_state_dict(load_checkpoint(run.best)["model"])
    mdice_after = mdice()
    print(f"validation mDice after (best checkpoint, epoch {history['best_epoch']}): {mdice_after['mDice']:.4f} "
          f"(before {mdice_before['mDice']:.4f})")
    if not distributed.is_main():  # torchrun: rank 0 writes the results
        return 0
    path = write_training_outputs(args, exp, prompt_type, decoder, fast, run, config, history, {
        "settings": {k: getattr(args, k) for k in ("epochs", *RUN_SETTINGS)},
        "val_mDice_before": mdice_before, "val_mDice_before_source": before_source, "val_mDice_after": mdice_after,
        "train_seconds": round(trained.seconds, 2), "seconds_per_epoch": trained.seconds_per_epoch,
        "seconds_total": round(time.perf_counter() - t0, 2)})
    print(f"training took {trained.seconds:.1f} s; best val accuracy {history['best']:.4f} at epoch "
          f"{history['best_epoch']}")
    print(f"wrote {path}; now run classify_val_task3.py")
    return 0


if __name__ == "__main__":
    from utils.scaffold.boundary import run_script  # the one error boundary (--debug: tracebacks)

    sys.exit(run_script(main))
