"""Task 3 (validation): per-organ classification accuracy of the trained class head.

    python classify_val_task3.py                 # after classify_train_task3.py, same --model/--prompt

Loads checkpoints/classifier/<model>/<prompt>/best.pt, predicts the organ of every (slice, organ)
sample of the split from its prompt, and writes results/task3/{metrics.json, table4.md,
confusion.png, examples.png}: accuracy per organ, the sample-weighted average (the study's Table 4),
the unweighted mean, sample counts and shares, and the majority-class baseline.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from utils.cli import add_common_args, open_experiment  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--prompt", default="one_central_point", help="prompt type the classifier was trained with")
    parser.add_argument("--classifier", type=Path, default=None,
                        help="classifier checkpoint (default checkpoints/classifier/<model>/<prompt>/best.pt)")
    parser.add_argument("--decode-batch", type=int, default=0,
                        help="prompts per decoder call (default 0 = auto: 8 on a CPU, 64 on a GPU)")
    parser.add_argument("--examples", type=int, default=6, help="example samples drawn in examples.png")
    return parser.parse_args(argv)


def pick_examples(samples, cache, truth, predicted, n):
    """The smallest organs first (the hard cases), then a spread of others, mixing hits and misses."""
    if n <= 0:
        return []
    by_area = sorted(range(len(samples)), key=lambda i: cache.organs(samples[i][0])[samples[i][1]])
    small = by_area[: n // 2]
    misses = [i for i in by_area[n // 2:] if truth[i] != predicted[i]][: n // 4]
    rest = [i for i in by_area[::-1] if i not in small and i not in misses]
    return (small + misses + rest)[:n]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from modified_classifier import ClassifyingMaskDecoder
    from utils.classification import accuracy_summary, confusion_matrix, predict_classes
    from utils.evaluation import sample_prompt
    from utils.io import write_json, write_text
    from utils.organs import ORGAN_TITLES, ORGANS, organ_title
    from utils.plots import save_class_examples, save_confusion
    from utils.prompts import PROMPT_TITLES
    from utils.reporting import markdown_table, provenance, provenance_line
    from utils.training import load_checkpoint

    exp = open_experiment(args)
    model, store, cache = exp.model, exp.store, exp.cache
    path = args.classifier or ROOT / "checkpoints" / "classifier" / model.name / args.prompt / "best.pt"
    if not path.is_file():
        print(f"error: {path}: no classifier checkpoint; run classify_train_task3.py --model {model.name} "
              f"--prompt {args.prompt} first", file=sys.stderr)
        return 1
    state = load_checkpoint(path)
    if state["config"].get("model") != model.name or state["config"].get("prompt") != args.prompt:
        print(f"error: {path} was trained for --model {state['config'].get('model')} --prompt "
              f"{state['config'].get('prompt')}", file=sys.stderr)
        return 1
    classifier = ClassifyingMaskDecoder(model.sam.mask_decoder)
    module = torch.nn.ModuleDict({"prompt_encoder": model.sam.prompt_encoder, "classifier": classifier})
    module.load_state_dict(state["model"])
    module.to(exp.device).eval()

    rows = cache.rows_for(args.split)
    cache.ensure(rows, batch_size=args.encode_batch, progress=not args.no_progress)
    samples = cache.samples(rows)
    ordered, predicted = predict_classes(cache, classifier, samples, args.prompt, args.seed, args.decode_batch)
    truth = [o for _, o in ordered]
    train_truth = [o for _, o in cache.samples(cache.rows_for("train"))]
    summary = accuracy_summary(truth, predicted, train_truth or None)
    meta = provenance(store, model, exp.device, args.seed, args.split, precision=args.precision,
                      encoder_precision=args.encoder_precision,
                      n_slices=len(rows), preset=state["config"].get("preset"), classifier_checkpoint=str(path),
                      classifier_epoch=state["epoch"] + 1, starting_weights=state["config"].get("starting_weights"))
    results = {"model": model.name, "prompt": args.prompt, "split": args.split, **summary, "provenance": meta}

    out = args.results / "task3"
    table_rows = [[ORGAN_TITLES[ORGANS.index(name)], v["accuracy"], v["n"], f"{100 * v['share']:.2f}"]
                  for name, v in summary["organs"].items()]
    table_rows += [["**Weighted Average**", summary["weighted_average"], summary["n"], "100.00"],
                   ["Mean over organs (unweighted)", summary["mean"], "", ""],
                   [f"Majority-class baseline (always {organ_title(ORGANS.index(summary['majority_organ']) + 1)})",
                    summary["majority_baseline"], "", ""]]
    table = markdown_table(["Organ Type", "Accuracy", "n", "share (%)"], table_rows)
    write_json(out / "metrics.json", results)
    write_text(out / "table4.md", f"# Table 4: Classification accuracy of different organs with "
               f"{PROMPT_TITLES[args.prompt]} prompts\n\n{provenance_line(meta)} Preset `{meta['preset']}`; "
               f"classifier epoch {meta['classifier_epoch']}.\n\n{table}")
    save_confusion(confusion_matrix(truth, predicted), ORGAN_TITLES, out / "confusion.png",
                   f"Task 3 confusion ({model.name}, {args.split}, {store.description})")
    examples = []
    for i in pick_examples(ordered, cache, truth, predicted, args.examples):
        row, organ = ordered[i]
        image, label = cache.view(row)
        mask = label == organ
        examples.append({"image": image, "mask": mask, "prompt": sample_prompt(cache, row, organ, mask, args.prompt, args.seed),
                         "truth": organ_title(organ), "predicted": organ_title(int(predicted[i]))})
    if examples:
        save_class_examples(examples, out / "examples.png",
                            f"Task 3 examples, smallest organs first ({model.name}, {store.description})")
    print(f"\n{table}")
    print(f"wrote {out / 'metrics.json'} and {out / 'table4.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
