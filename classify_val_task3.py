"""Task 3 (validation): per-organ classification accuracy of the trained class head.

    python classify_val_task3.py                 # after classify_train_task3.py, same --model/--prompt

Loads the newest classifier run for this model, checkpoint, slice store and prompt
(checkpoints/classifier/<model>/<prompt>/run-<key>/best.pt; or --classifier PATH), predicts the organ of
every (slice, organ) sample of the split from its prompt, and writes results/task3/{metrics.json,
table4.md, confusion.png, examples.png}: accuracy per organ, the sample-weighted average (the study's
Table 4), the unweighted mean, sample counts and shares, and the majority-class baseline.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from utils.scaffold.config import checked, parse_with_presets  # noqa: E402
from utils.scaffold.flags import new_task_parser  # noqa: E402


def parse_args(argv: list[str] | None = None):
    parser = new_task_parser(__doc__, split="val")
    parser.add_argument("--prompt", default="one_central_point", help="prompt type the classifier was trained with")
    parser.add_argument("--classifier", default="auto", metavar="auto|PATH",
                        help="auto (default): the newest classifier run for this model, checkpoint, store and prompt "
                             "under --classifier-dir; or a run folder / best.pt")
    parser.add_argument("--classifier-dir", type=Path, default=ROOT / "checkpoints" / "classifier",
                        help="root of the classifier run folders (default checkpoints/classifier)")
    parser.add_argument("--allow-other-data", action="store_true",
                        help="accept a --classifier PATH trained on another store or checkpoint (recorded)")
    parser.add_argument("--decode-batch", type=checked(int, "non_negative"), default=0,
                        help="prompts per decoder call (default 0 = auto: 8 on a CPU, 64 on a GPU)")
    parser.add_argument("--examples", type=checked(int, "non_negative"), default=6,
                        help="example samples drawn in examples.png")
    from utils.scaffold.flags import one_prompt_type

    return parse_with_presets(parser, argv, checks={"prompt": one_prompt_type})  # bad values: exit 2


def pick_examples(samples, cache, truth, predicted, n):
    """The smallest organs first (the hard cases), then a spread of others, mixing hits and misses."""
    if n <= 0:
        return []
    by_area = sorted(range(len(samples)), key=lambda i: cache.index.organs(samples[i][0])[samples[i][1]])
    small = by_area[: n // 2]
    misses = [i for i in by_area[n // 2:] if truth[i] != predicted[i]][: n // 4]
    rest = [i for i in by_area[::-1] if i not in small and i not in misses]
    return (small + misses + rest)[:n]


def open_classifier(args, exp):
    """The Task 3 classifier to validate (--classifier auto|PATH), found by the scaffold's one hand-off and checked
    to be a Task 3 classifier for --prompt before its weights are loaded. Returns (handoff, classifier, prompt
    encoder), on the device, in eval mode."""
    from modified_classifier import load_classifier
    from utils.core.checkpoints import TASK3
    from utils.scaffold.runs import RunMismatch, find_handoff
    from utils.scaffold.session import wanted_data

    found, source = find_handoff(args.classifier, args.classifier_dir, args.prompt, wanted_data(exp),
                                 args.allow_other_data, TASK3, "--classifier")
    if found is None:
        raise RunMismatch(f"no classifier: {source.replace('pre-trained decoder: ', '')}; run "
                          f"classify_train_task3.py --model {exp.model.name} --prompt {args.prompt} first")
    if found.identity.get("prompt") != args.prompt:
        raise RunMismatch(f"{found.checkpoint}: a {found.identity.get('task')} run for --prompt "
                          f"{found.identity.get('prompt')}, not a Task 3 classifier for --prompt {args.prompt}")
    classifier, prompt_encoder = load_classifier(exp.model.sam, found.state["model"])
    return found, classifier, prompt_encoder


def score(args, exp, found, ordered, predicted, rows) -> dict:
    """metrics.json: accuracy per organ and overall, provenance and the per-sample records (for the intervals)."""
    from utils.eval.accuracy import accuracy_summary
    from utils.scaffold.results import provenance

    store, cache, config = exp.store, exp.cache, found.state["config"]
    truth = [o for _, o in ordered]
    train_truth = [o for _, o in cache.index.split_samples("train")]
    summary = accuracy_summary(truth, predicted, train_truth or None)
    meta = provenance(store, exp.model, exp.device, args.seed, args.split, precision=args.precision,
                      encoder_precision=args.encoder_precision, n_slices=len(rows),
                      preset=config.get("preset"), classifier_checkpoint=str(found.checkpoint),
                      classifier_run=found.run_key, classifier_epoch=found.epoch, classifier_other_data=found.other_data,
                      starting_weights=config.get("starting_weights"))
    results = {"model": exp.model.name, "prompt": args.prompt, "split": args.split, **summary, "provenance": meta}
    # per sample (case, organ, 1 if named right else 0), for the tables' bootstrap intervals
    results["records"] = {"correct": [(store.records[cache.index.store_index(row)].case_id, int(organ),
                                        int(organ == int(p)))
                                      for (row, organ), p in zip(ordered, predicted)]}
    return results


def write_figures(args, exp, out, ordered, predicted) -> None:
    """confusion.png, and examples.png: the smallest organs first, then misses and a spread of others."""
    from utils.core.organs import ORGAN_TITLES, organ_title
    from utils.eval.accuracy import confusion_matrix
    from utils.inference.batches import sample_prompt
    from utils.report.plots import save_class_examples, save_confusion

    cache, truth = exp.cache, [o for _, o in ordered]
    save_confusion(confusion_matrix(truth, predicted), ORGAN_TITLES, out / "confusion.png",
                   f"Task 3 confusion ({exp.model.name}, {args.split}, {exp.store.description})")
    examples = []
    for i in pick_examples(ordered, cache, truth, predicted, args.examples):
        row, organ = ordered[i]
        image, label = cache.view(row)
        mask = label == organ
        examples.append({"image": image, "mask": mask, "prompt": sample_prompt(cache, row, organ, mask, args.prompt, args.seed),
                         "truth": organ_title(organ), "predicted": organ_title(int(predicted[i]))})
    if examples:
        save_class_examples(examples, out / "examples.png",
                            f"Task 3 examples, smallest organs first ({exp.model.name}, {exp.store.description})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from utils.core import distributed
    from utils.inference.classify import predict_classes
    from utils.inference.prompts import PROMPT_TITLES
    from utils.report.tables import table4, titled
    from utils.scaffold.results import config_record, write_results
    from utils.scaffold.session import open_experiment

    exp = open_experiment(args)
    found, classifier, prompt_encoder = open_classifier(args, exp)
    rows = exp.cache.index.rows_for(args.split)
    exp.cache.ensure(rows, batch_size=args.encode_batch, progress=not args.no_progress)
    ordered, predicted = predict_classes(exp.cache, classifier, exp.cache.index.samples(rows), args.prompt, args.seed,
                                         args.decode_batch, args.precision, prompt_encoder)
    results = score(args, exp, found, ordered, predicted, rows)
    out = args.results / "task3"
    if not distributed.is_main():  # torchrun: every rank computed the gathered results; rank 0 writes them
        return 0
    write_results(out, results, {"table4.md": titled(f"Table 4: Classification accuracy of different organs with "
                                                     f"{PROMPT_TITLES[args.prompt]} prompts", table4(results))},
                  dict(config_record(args), classifier_run=found.record))
    write_figures(args, exp, out, ordered, predicted)
    print(f"\n{table4(results)}")
    print(f"wrote {out / 'metrics.json'} and {out / 'table4.md'}")
    return 0


if __name__ == "__main__":
    from utils.scaffold.boundary import run_script  # the one error boundary (--debug: tracebacks)

    sys.exit(run_script(main))
