"""Assemble results/REPORT.md from what the task scripts wrote into results/ (and nothing else).

    python make_report.py [--results results]

Tables 1-4 in the study report's shapes, the training curves and figures, and for every task the
data, split, slice count, model, checkpoint digest, preset, seed, device and date that produced its
numbers (and the precision it ran at). A missing piece is named with the command that makes it. The output depends only on the
files in results/, so running it twice gives the same report.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from utils.core.io import write_text  # noqa: E402
from utils.inference.prompts import PROMPT_TITLES, PROMPT_TYPES  # noqa: E402
from utils.report.tables import (  # noqa: E402
    table1,
    table2,
    table3,
    table3d,
    table4,
    table_box_robustness,
    table_interactive,
    task3_settings_note,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=ROOT / "results", help="results folder (default results/)")
    return parser.parse_args(argv)


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _provenance_rows(name: str, meta: dict, preset: str | None) -> str:
    return (f"| {name} | {meta.get('data')} | {meta.get('split')} | {meta.get('n_slices')} | {meta.get('model')} | "
            f"`{str(meta.get('checkpoint_sha256'))[:12]}` | {preset or '-'} | {meta.get('seed')} | {meta.get('device')} | "
            f"{meta.get('encoder_precision', 'fp32')} / {meta.get('precision', 'fp32')} | {meta.get('date')} |")


def build_report(results: Path) -> str:
    pre = _load(results / "preprocess" / "summary.json")
    t1 = _load(results / "task1" / "metrics.json")
    t2 = _load(results / "task2" / "metrics.json")
    t3_train = _load(results / "task3" / "train_metrics.json")
    t3 = _load(results / "task3" / "metrics.json")
    study = _load(results / "study.json")
    baselines = {arch: m for arch in ("unet", "resunet") if (m := _load(results / "baseline" / arch / "metrics.json"))}

    out = ["# SAM on BTCV: study report", ""]
    datas = {m["provenance"]["data"] for m in (t1, t2, t3) if m}
    if any("phantom" in d for d in datas):
        out += ["> **These numbers come from the suite's synthetic BTCV-format phantom, not from BTCV.** They "
                "show that every stage of the study runs and what it measures on that phantom; they are not "
                "figures about real CT and must not be compared with the study report's numbers.", ""]
    out += ["## Where every number comes from", "",
            "| results | data | split | slices | model | checkpoint sha256 | preset | seed | device "
            "| precision (encoder / decoder) | date |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    if t1:
        out.append(_provenance_rows("Table 1 (Task 1)", t1["provenance"], None))
    if t2:
        out.append(_provenance_rows("Tables 2-3 (Task 2)", t2["provenance"], t2.get("preset")))
    if t3:
        out.append(_provenance_rows("Table 4 (Task 3)", t3["provenance"], t3["provenance"].get("preset")))
    for folder, name in (("task3d", "3-D (zero-shot)"), ("task3d_finetuned", "3-D (Task 2's decoders)")):
        m3d = _load(results / folder / "metrics.json")
        if m3d:
            out.append(_provenance_rows(name, m3d["provenance"], None))
    for arch, m in baselines.items():
        out.append(_provenance_rows(f"Table 3 ({arch} baseline)", m["provenance"], m.get("preset")))
    out.append("")
    if pre:
        s = pre["summary"]
        out += [f"Slice store: {pre['data']}, {s['volumes']} volumes ({s['layout']}), {s['slices']} slices with an "
                f"organ (train {s['slices_per_split']['train']}, val {s['slices_per_split']['val']}), "
                f"{s['organ_samples']} (slice, organ) samples, CT window {pre['window_hu'][0]:g}..{pre['window_hu'][1]:g} HU.",
                ""]
        for name in ("phantom_montage.png", "slices_montage.png"):
            if (results / "preprocess" / name).is_file():
                out += [f"![slices with label overlays](preprocess/{name})", ""]
    else:
        out += ["_The slice store has not been built: run `python preprocess_slices.py --phantom` "
                "(or `--data-root BTCV_DIR`)._", ""]

    out += ["## Task 1: zero-shot segmentation", ""]
    if t1:
        out += ["### Table 1: mDice of different prompts", "", table1(t1)]
        overlays = [p for p in PROMPT_TYPES if (results / "task1" / "overlays" / f"{p}.png").is_file()]
        out += [f"![Task 1 overlays, {PROMPT_TITLES[p]}](task1/overlays/{p}.png)" for p in overlays[:2]] + [""]
    else:
        out += ["_Task 1 has not been run: run `python segmentation_task1.py`._", ""]

    out += ["## Task 2: fine-tuning the prompt encoder and mask decoder", ""]
    if t2:
        out += ["### Table 2: mDice of different prompts after fine-tuning", "", table2(t2)]
    if table3(t2, baselines):
        out += ["### Table 3: performance comparison", "", table3(t2, baselines)]
        out += [f"![{arch} baseline curves](baseline/{arch}/curves.png)" for arch in baselines
                if (results / "baseline" / arch / "curves.png").is_file()] + [""]
    if not baselines:
        out += ["_The U-Net baselines of Table 3 have not been run: run `python train_baseline.py --arch unet` "
                "and `--arch resunet`._", ""]
    if t2:
        out += ["### Training curves (Figures 1-2 of the study report)", ""]
        for p in t2["prompts"]:
            if (results / "task2" / p / "curves.png").is_file():
                out += [f"![{PROMPT_TITLES[p]}](task2/{p}/curves.png)", ""]
    else:
        out += ["_Task 2 has not been run: run `python finetune_task2.py --preset quick`._", ""]

    out += interactive_section(results)

    out += ["## Task 3: naming the organ", ""]
    if t3:
        out += ["### Table 4: classification accuracy per organ", "", table4(t3)]
        if t3_train:
            before, after = t3_train["val_mDice_before"]["mDice"], t3_train["val_mDice_after"]["mDice"]
            out += [f"{task3_settings_note(t3_train)} Training the shared transformer for classification changed "
                    f"the validation mDice with {PROMPT_TITLES[t3_train['prompt']]} prompts from {before:.4f} to "
                    f"{after:.4f} (starting weights: {t3_train['starting_weights']}).".lstrip(), ""]
        for name, title in (("curves.png", "training curves"), ("confusion.png", "confusion matrix"),
                            ("examples.png", "examples (Figure 3 style)")):
            if (results / "task3" / name).is_file():
                out += [f"![Task 3 {title}](task3/{name})", ""]
    elif t3_train:
        out += ["_Task 3 validation has not been run: run `python classify_val_task3.py`._", ""]
    else:
        out += ["_Task 3 has not been run: run `python classify_train_task3.py --preset quick`, then "
                "`python classify_val_task3.py`._", ""]

    out += section_3d(results)

    if study:
        out += ["## Wall time of the run that produced these results", "",
                "| stage | seconds | command |", "|---|---|---|"]
        for stage, seconds in study["wall_seconds"].items():
            out.append(f"| {stage} | {seconds} | `{study['commands'].get(stage, '')}` |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def section_3d(results: Path) -> list[str]:
    """The 3-D section: the dense store, then zero-shot and fine-tuned tables and figures (segmentation_3d.py)."""
    out = ["## 3-D: volumes from slice prompts, and whole organs from one prompt", ""]
    store = _load(results / "task3d" / "store" / "preprocess" / "summary.json")
    if store:
        s = store["summary"]
        out += [f"3-D store: {store['data']}, {s['volumes']} volume(s), {s['slices']} slices (every slice through "
                f"the organs, {s.get('slices_without_organ', 0)} of them without any organ).", ""]
    found = False
    for folder, title in (("task3d", "zero-shot"), ("task3d_finetuned", "Task 2's fine-tuned decoders")):
        metrics = _load(results / folder / "metrics.json")
        if not metrics:
            continue
        found = True
        out += [f"### 3-D results ({title})", "", table3d(metrics)]
        for figure in ["slice_vs_3d.png"] + [f"views_{c}.png" for c in metrics["cases"][:1]]:
            if (results / folder / figure).is_file():
                out += [f"![{title}: {figure[:-4]}]({folder}/{figure})", ""]
    if not found:
        out += ["_The 3-D stage has not been run: run `python preprocess_slices.py --phantom --data-root "
                "data/phantom_3d --phantom-cases 35 --phantom-slices 18 --slice-margin 2 --out data/slices_3d`, "
                "then `python segmentation_3d.py --slices data/slices_3d`._", ""]
    return out


def interactive_section(results: Path) -> list[str]:
    """Interactive segmentation (interactive_task1.py): NoC tables, Dice-vs-clicks curves, box robustness."""
    runs = {"zero-shot": _load(results / "interactive" / "metrics.json"),
            "fine-tuned": _load(results / "interactive_finetuned" / "metrics.json")}
    out = ["## Interactive segmentation: correction clicks and imprecise boxes", ""]
    if not any(runs.values()):
        return out + ["_Not run: run `python interactive_task1.py --preset quick` (and again with "
                      "`--finetuned auto` after Task 2)._", ""]
    folders = {"zero-shot": "interactive", "fine-tuned": "interactive_finetuned"}
    for kind, metrics in runs.items():
        if not metrics:
            continue
        out += [f"### Dice after each click and NoC ({kind})", "", table_interactive(metrics)]
        for start in metrics["starts"]:
            for name, what in ((f"dice_vs_clicks_{start}.png", "Dice vs clicks"), (f"rounds_{start}.png", "rounds")):
                if (results / folders[kind] / name).is_file():
                    out += [f"![{what}, {PROMPT_TITLES.get(start, start)} start, {kind}]({folders[kind]}/{name})", ""]
    tuned = runs["fine-tuned"]
    if tuned and tuned.get("box_robustness") and not tuned["box_robustness"]["fine_tuned"]:
        runs["fine-tuned (no Task 2 box decoder found: pre-trained)"] = runs.pop("fine-tuned")
    if sum(1 for m in runs.values() if m and m.get("box_robustness")) > 1:
        out += ["### Box robustness: bound-box mDice with jittered boxes", "", table_box_robustness(runs)]
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.results.is_dir():
        print(f"error: {args.results}: no results folder; run the task scripts (or make reproduce) first", file=sys.stderr)
        return 1
    path = write_text(args.results / "REPORT.md", build_report(args.results))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
