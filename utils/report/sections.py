"""REPORT.md's sections, top to bottom (:data:`SECTIONS`): each reads what it needs from a
:class:`utils.report.results_files.ResultsFiles` and returns its markdown lines; a missing piece is named
with the command that makes it. make_report.py assembles them.
"""
from __future__ import annotations

from utils.inference.prompts import PROMPT_TITLES, STUDY_PROMPTS
from utils.report.decoders import INTERACTIVE_FOLDERS, click_response_compared, prompts_compared, sessions_compared
from utils.core.errors import ResultsError
from utils.report.results_files import BASELINE_ARCHS, REWRITES, ResultsFiles
from utils.report.tables import (
    table1,
    table2,
    table3,
    table3d,
    table3d_compared,
    table3d_organs_compared,
    table4,
    table_box_robustness,
    table_interactive,
    task3_settings_note,
)


def _provenance_rows(name: str, meta: dict, preset: str | None) -> str:
    return (f"| {name} | {meta.get('data')} | {meta.get('split')} | {meta.get('n_slices')} | {meta.get('model')} | "
            f"`{str(meta.get('checkpoint_sha256'))[:12]}` | {preset or '-'} | {meta.get('seed')} | {meta.get('device')} | "
            f"{meta.get('encoder_precision', 'fp32')} / {meta.get('precision', 'fp32')} | {meta.get('date')} |")


def phantom_warning(files: ResultsFiles) -> list[str]:
    datas = {m["provenance"]["data"] for name in ("task1", "task2", "task3")
             if (m := files.readable(f"{name}/metrics.json"))}
    if not any("phantom" in d for d in datas):
        return []
    return ["> **These numbers come from the suite's synthetic BTCV-format phantom, not from BTCV.** They "
            "show that every stage of the study runs and what it measures on that phantom; they are not "
            "figures about real CT and must not be compared with the study report's numbers.", ""]


def provenance_section(files: ResultsFiles) -> list[str]:
    """One row per results file that was read (a damaged one is named below the table)."""
    out = ["| results | data | split | slices | model | checkpoint sha256 | preset | seed | device "
           "| precision (encoder / decoder) | date |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = [("Table 1 (Task 1)", "task1/metrics.json", lambda m: None),
            ("Tables 2-3 (Task 2)", "task2/metrics.json", lambda m: m.get("preset")),
            ("Table 4 (Task 3)", "task3/metrics.json", lambda m: m["provenance"].get("preset")),
            ("3-D (zero-shot)", "task3d/metrics.json", lambda m: None),
            ("3-D (Task 2's decoders)", "task3d_finetuned/metrics.json", lambda m: None),
            ("3-D (interactive decoder)", "task3d_trained/metrics.json", lambda m: None),
            ("3-D (propagation decoder)", "task3d_propagation/metrics.json", lambda m: None)]
    rows += [(f"Table 3 ({arch} baseline)", f"baseline/{arch}/metrics.json", lambda m: m.get("preset"))
             for arch in BASELINE_ARCHS]
    for title, name, preset in rows:
        if m := files.readable(name):
            out.append(_provenance_rows(title, m["provenance"], preset(m)))
    out.append("")
    out += [f"_Not in the table: {files.damaged[name]}._" for _, name, _ in rows if name in files.damaged]
    return out + ([""] if set(files.damaged) & {name for _, name, _ in rows} else [])


def store_section(files: ResultsFiles) -> list[str]:
    """The slice store's summary line and montage (preprocess_slices.py)."""
    pre = files.get("preprocess/summary.json")
    if not pre:
        return ["_The slice store has not been built: run `python preprocess_slices.py --phantom` "
                "(or `--data-root BTCV_DIR`)._", ""]
    s = pre["summary"]
    out = [f"Slice store: {pre['data']}, {s['volumes']} volumes ({s['layout']}), {s['slices']} slices with an "
           f"organ (train {s['slices_per_split']['train']}, val {s['slices_per_split']['val']}), "
           f"{s['organ_samples']} (slice, organ) samples, CT window {pre['window_hu'][0]:g}..{pre['window_hu'][1]:g} HU.",
           ""]
    for name in ("phantom_montage.png", "slices_montage.png"):
        if (files.root / "preprocess" / name).is_file():
            out += [f"![slices with label overlays](preprocess/{name})", ""]
    return out


def task1_section(files: ResultsFiles) -> list[str]:
    t1 = files.get("task1/metrics.json")
    if not t1:
        return ["_Task 1 has not been run: run `python segmentation_task1.py`._", ""]
    overlays = [p for p in STUDY_PROMPTS if (files.root / "task1" / "overlays" / f"{p}.png").is_file()]
    out = (["### Table 1: mDice of different prompts", "", table1(t1)]
           + [f"![Task 1 overlays, {PROMPT_TITLES[p]}](task1/overlays/{p}.png)" for p in overlays[:2]] + [""])
    compared = prompts_compared(t1, files.get("task2/metrics.json"), files.get("task1_trained/metrics.json"))
    if compared:
        out += ["### Table 1 with the interactive decoder: one decoder for every prompt", "",
                "Task 1's protocol (same samples, same prompt draws) decoded with the interactive decoder "
                "(`segmentation_task1.py --finetuned interactive`), beside zero-shot and Task 2's per-prompt "
                "decoders (Table 2): what training one decoder for every start costs against one per prompt.", "",
                compared]
    return out


def task2_section(files: ResultsFiles) -> list[str]:
    """Tables 2-3 (Task 2 and the measured baselines) and the training curves."""
    t2, baselines, results = files.get("task2/metrics.json"), files.baselines(), files.root
    out = []
    if t2:
        out += ["### Table 2: mDice of different prompts after fine-tuning", "", table2(t2)]
    if table3(t2, baselines):
        out += ["### Table 3: performance comparison", "", table3(t2, baselines)]
        out += [f"![{arch} baseline curves](baseline/{arch}/curves.png)" for arch in baselines
                if (results / "baseline" / arch / "curves.png").is_file()] + [""]
    if not baselines:
        out += ["_The U-Net baselines of Table 3 have not been run: run `python train_baseline.py --arch unet` "
                "and `--arch resunet`._", ""]
    if not t2:
        return out + ["_Task 2 has not been run: run `python finetune_task2.py --preset quick`._", ""]
    out += ["### Training curves (Figures 1-2 of the study report)", ""]
    for p in t2["prompts"]:
        if (results / "task2" / p / "curves.png").is_file():
            out += [f"![{PROMPT_TITLES[p]}](task2/{p}/curves.png)", ""]
    return out


def task3_section(files: ResultsFiles) -> list[str]:
    """Table 4, the note on what classification training did to segmentation, and the figures."""
    t3, t3_train = files.get("task3/metrics.json"), files.get("task3/train_metrics.json")
    if not t3:
        if t3_train:
            return ["_Task 3 validation has not been run: run `python classify_val_task3.py`._", ""]
        return ["_Task 3 has not been run: run `python classify_train_task3.py --preset quick`, then "
                "`python classify_val_task3.py`._", ""]
    out = ["### Table 4: classification accuracy per organ", "", table4(t3)]
    if t3_train:
        before, after = t3_train["val_mDice_before"]["mDice"], t3_train["val_mDice_after"]["mDice"]
        out += [f"{task3_settings_note(t3_train)} Training the shared transformer for classification changed "
                f"the validation mDice with {PROMPT_TITLES[t3_train['prompt']]} prompts from {before:.4f} to "
                f"{after:.4f} (starting weights: {t3_train['starting_weights']}).".lstrip(), ""]
    for name, title in (("curves.png", "training curves"), ("confusion.png", "confusion matrix"),
                        ("examples.png", "examples (Figure 3 style)")):
        if (files.root / "task3" / name).is_file():
            out += [f"![Task 3 {title}](task3/{name})", ""]
    return out


# The 3-D stage's results folders (segmentation_3d.py --finetuned none / auto / interactive / propagation) and titles.
THREE_D_FOLDERS = {"task3d": "zero-shot", "task3d_finetuned": "Task 2's fine-tuned decoders",
                   "task3d_trained": "the interactive decoder", "task3d_propagation": "the propagation decoder"}


def reused_note(record: dict) -> str:
    """segment_volume.py's sidecar: how many slices it read from a store's cache (--embeddings-from), if any."""
    reused = record["timing"].get("reused_slices", 0)
    return f", {reused} read from the 3-D store's embedding cache (--embeddings-from)" if reused else ""


def unlabelled_ct_lines(files: ResultsFiles, zero_shot: dict | None) -> list[str]:
    """segment_volume.py's example (a CT without labels, scored afterwards) beside box3d's zero-shot result."""
    record = files.get("segment_volume/0035_labels.json")
    if not record or "scored_against" not in record:
        return []
    scored = record["scored_against"]
    line = (f"### A CT without labels\n\n`segment_volume.py` on phantom case 35 with its labels withheld, from "
            f"{len(record['organs'])} organs' 3-D boxes written as a person would give them "
            f"(`prompts_from_labels.py`, {record['decoder']['source']}): 3-D Dice {scored['dice']:.4f}, HD95 "
            f"{scored['hd95_mm']:.1f} mm, NSD {scored['nsd']:.4f}, scored against the labels afterwards; "
            f"{record['timing']['encoded_slices']} slices encoded{reused_note(record)} in "
            f"{record['timing']['wall_seconds']:.0f} s.")
    box3d = (zero_shot or {}).get("modes", {}).get("box3d", {}).get("bound_box")
    if box3d:
        line += (f" The same boxes through segmentation_3d.py's box3d (zero-shot): 3-D Dice {box3d['dice']:.4f}, "
                 f"HD95 {box3d['hd95_mm']:.1f} mm, NSD {box3d['nsd']:.4f}.")
    picture = files.root / "segment_volume" / "0035_labels.png"
    return [line, ""] + ([f"![A CT without labels: segment_volume.py's picture](segment_volume/{picture.name})", ""]
                         if picture.is_file() else [])


def section_3d(files: ResultsFiles) -> list[str]:
    """The 3-D section: the dense store, then zero-shot and fine-tuned tables and figures (segmentation_3d.py)."""
    out = []
    store = files.get("task3d/store/preprocess/summary.json")
    if store:
        s = store["summary"]
        out += [f"3-D store: {store['data']}, {s['volumes']} volume(s), {s['slices']} slices (every slice through "
                f"the organs, {s.get('slices_without_organ', 0)} of them without any organ).", ""]
    found, damaged, missing = {}, [], []
    for folder, title in THREE_D_FOLDERS.items():
        try:  # one damaged file costs its own tables only: the intact decoders' tables stay
            metrics = files.get(f"{folder}/metrics.json")
        except ResultsError as exc:
            damaged.append(f"_**{title}: not shown.** {exc}._")
            continue
        if metrics:
            found[title] = metrics
        else:
            missing.append(f"{folder}/ ({title}: `{REWRITES[folder + '/metrics.json']}`)")
    if len(found) > 1:
        out += ["### 3-D: the decoders side by side", "", table3d_compared(found), ""]
        out += ["### 3-D per organ: what holds from one box", "", table3d_organs_compared(found), ""]
    for folder, title in THREE_D_FOLDERS.items():
        metrics = found.get(title)
        if not metrics:
            continue
        out += [f"### 3-D results ({title})", "", table3d(metrics)]
        for figure in ["slice_vs_3d.png"] + [f"{name}_{c}.png" for c in metrics["cases"][:1]
                                             for name in ("views", "dice_along_z")]:
            if (files.root / folder / figure).is_file():
                out += [f"![{title}: {figure[:-4]}]({folder}/{figure})", ""]
    try:
        out += unlabelled_ct_lines(files, found.get("zero-shot"))
    except ResultsError as exc:
        damaged.append(f"_**A CT without labels: not shown.** {exc}._")
    for line in damaged:
        out += [line, ""]
    if found and missing:
        out += ["_Not run (no results folder): " + "; ".join(missing) + "._", ""]
    if not found:
        out += ["_The 3-D stage has not been run: run `python preprocess_slices.py --phantom --data-root "
                "data/phantom_3d --phantom-cases 35 --phantom-extent abdomen --phantom-slices 50 --slice-margin 2 "
                "--out data/slices_3d`, "
                "then `python segmentation_3d.py --slices data/slices_3d`._", ""]
    return out


def interactive_section(files: ResultsFiles) -> list[str]:
    """Interactive segmentation (interactive_task1.py): the decoders side by side (curves, NoC, Dice AUC, mask
    input on and off, box robustness), then each decoder's own tables and figures, and the interactive training."""
    runs = {label: files.get(f"{folder}/metrics.json") for label, folder in INTERACTIVE_FOLDERS.items()}
    if not any(runs.values()):
        return ["_Not run: run `python interactive_task1.py --preset quick` (and again with "
                "`--finetuned auto` after Task 2, `--finetuned interactive` after finetune_interactive.py)._", ""]
    out = []
    if sum(1 for m in runs.values() if m) > 1:
        out += ["### The decoders side by side", "", sessions_compared(runs)]
        out += compared_figures(files, runs)
    response = click_response_compared(runs)
    if response:
        out += ["### Does a click do what it says? The click response", "",
                "Per round with a click: whether the decoder's new mask has the click's label at the clicked pixel, "
                "and the pixels it fixed and broke inside the click's own change (the component of old XOR new "
                "that holds the click) and outside it, summed over rounds and samples; measured on the decoder's "
                "own mask, before any local merge (utils/eval/click_response.py).", "", response, ""]
    tuned = runs["Task 2's decoder"]
    if tuned and tuned.get("box_robustness") and not tuned["box_robustness"]["fine_tuned"]:
        runs["Task 2's decoder (none found: pre-trained)"] = runs.pop("Task 2's decoder")
    if sum(1 for m in runs.values() if m and m.get("box_robustness")) > 1:
        out += ["### Box robustness: bound-box mDice with jittered boxes", "", table_box_robustness(runs)]
    folders = dict(INTERACTIVE_FOLDERS, **{"Task 2's decoder (none found: pre-trained)": "interactive_finetuned"})
    for kind, metrics in runs.items():
        if not metrics:
            continue
        out += [f"### Dice after each click and NoC ({kind})", "", table_interactive(metrics)]
        for start in metrics["starts"]:
            for name, what in ((f"dice_vs_clicks_{start}.png", "Dice vs clicks"), (f"rounds_{start}.png", "rounds")):
                if (files.root / folders[kind] / name).is_file():
                    out += [f"![{what}, {PROMPT_TITLES.get(start, start)} start, {kind}]({folders[kind]}/{name})", ""]
    return out + interactive_training_lines(files)


def compared_figures(files: ResultsFiles, runs: dict) -> list[str]:
    """One Dice-vs-clicks figure per start with every decoder's curve (mask input as run), drawn from the
    metrics files into results/interactive_compared/ (the report's own figures: rewritten with it)."""
    from utils.report.plots import save_dice_vs_clicks

    out = []
    starts = list(dict.fromkeys(s for m in runs.values() if m for s in m["starts"]))
    for start in starts:
        curves = {label: m["starts"][start] for label, m in runs.items() if m and start in m["starts"]}
        path = files.root / "interactive_compared" / f"dice_vs_clicks_{start}.png"
        save_dice_vs_clicks(curves, path, f"Dice vs clicks, {PROMPT_TITLES.get(start, start)} start: every decoder")
        out += [f"![Dice vs clicks, {PROMPT_TITLES.get(start, start)} start, every decoder]"
                f"(interactive_compared/{path.name})", ""]
    return out


def interactive_training_lines(files: ResultsFiles) -> list[str]:
    """How the interactive decoder was trained: its run, settings, chosen epoch and curves."""
    m = files.get("interactive_training/metrics.json")
    if not m:
        return []
    s = m["settings"]
    sessions = s.get("interactive", {})
    lines = ["### How the interactive decoder was trained", "",
             f"`finetune_interactive.py`, preset `{m['preset']}`, run `{m['run']['key']}`: start decoder "
             f"{m.get('init', 'pretrained')}, {s['optimizer']} lr {s['learning_rate']}, batch {s['batch_size']}, "
             f"{s['samples_per_epoch'] or 'all'} sessions per epoch of {m['training_samples']} training samples; "
             f"{sessions.get('rounds')} correction rounds, box starts {sessions.get('box_fraction')} (jitter up to "
             f"{sessions.get('box_jitter')} px) else one point, mask fed back with p = {sessions.get('mask_feedback')}, "
             f"loss {sessions.get('loss')}, training precision {s['fast_path']['train_precision']}. Epoch "
             f"{m['best_epoch']} chosen on the monitor (the evaluation's protocol on {m['monitor_samples']} "
             "TRAINING samples: the validation split is never used to choose).", ""]
    if (files.root / "interactive_training" / "curves.png").is_file():
        lines += ["![interactive training curves](interactive_training/curves.png)", ""]
    return lines


def wall_time_section(files: ResultsFiles) -> list[str]:
    study = files.get("study.json")
    if not study:
        return []
    out = ["| stage | seconds | command |", "|---|---|---|"]
    for stage, seconds in study["wall_seconds"].items():
        out.append(f"| {stage} | {seconds} | `{study['commands'].get(stage, '')}` |")
    return out + [""]


# The report, top to bottom: (heading or None, the section's lines under it). A section whose results file is
# damaged keeps its heading and says which file and which command rewrites it; the others are written as usual.
SECTIONS = (
    ("Where every number comes from", provenance_section),
    (None, store_section),
    ("Task 1: zero-shot segmentation", task1_section),
    ("Task 2: fine-tuning the prompt encoder and mask decoder", task2_section),
    ("Interactive segmentation: correction clicks and imprecise boxes", interactive_section),
    ("Task 3: naming the organ", task3_section),
    ("3-D: volumes from slice prompts, and whole organs from one prompt", section_3d),
    ("Wall time of the run that produced these results", wall_time_section),
)
