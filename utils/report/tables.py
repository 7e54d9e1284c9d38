"""Every table of the study, rendered from the metrics dicts the scripts write (metrics.json).

The scripts write their table*.md files with these functions, and make_report.py renders the report's
tables with the same functions from the same metrics.json: one rendering of each table, no splicing.
Each function returns Markdown without a title line (the caller adds '# ...' or '### ...').
"""
from __future__ import annotations

from typing import Sequence

from utils.core.organs import ORGAN_TITLES, ORGANS, organ_title
from utils.eval.bootstrap import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    bootstrap_difference,
    bootstrap_metric,
)
from utils.inference.prompts import PROMPT_TITLES
from utils.report.markdown import markdown_table, provenance_line

# ------------------------------------------------------------------ confidence intervals (issue 14)
# Every interval in the tables: a percentile bootstrap over validation volumes (utils.eval.bootstrap), from
# the per-sample records a script wrote into its metrics.json ("records"), with these fixed settings.
CI_HEADER = "95 % CI"
CI_RESAMPLES, CI_SEED, CI_CONFIDENCE = DEFAULT_RESAMPLES, DEFAULT_SEED, DEFAULT_CONFIDENCE


def interval(records: Sequence | None, metric: str = "mdice") -> dict | None:
    """The table's interval of ``metric`` ("mdice" or "accuracy") from [(case, organ, value)] records,
    or None when the results file holds no records (written before records were kept)."""
    if not records:
        return None
    return bootstrap_metric(records, metric, CI_RESAMPLES, CI_SEED, CI_CONFIDENCE)


def difference(records_a: Sequence | None, records_b: Sequence | None, metric: str = "mdice") -> dict | None:
    """Paired interval of metric(a) - metric(b) over the same samples, or None without both record lists."""
    if not records_a or not records_b:
        return None
    return bootstrap_difference(records_a, records_b, metric, CI_RESAMPLES, CI_SEED, CI_CONFIDENCE)


def ci_cell(result: dict | None) -> str:
    """'[low, high]' with 4 decimals (the tables' precision), or 'n/a' without records."""
    return "n/a" if result is None else f"[{result['low']:.4f}, {result['high']:.4f}]"


def difference_cell(result: dict | None) -> str:
    """'+0.0820 [+0.0400, +0.1200] *': the paired difference, its interval, and * when it excludes 0."""
    if result is None:
        return "n/a"
    mark = " *" if result["excludes_zero"] else ""
    return f"{result['mean']:+.4f} [{result['low']:+.4f}, {result['high']:+.4f}]{mark}"


def _first_records(records) -> list | None:
    while isinstance(records, dict):
        records = next(iter(records.values()), None)
    return records or None


def ci_note(records) -> str:
    """The sentence under a table that says how its intervals were computed (or that there are none)."""
    sample = _first_records(records)
    if sample is None:
        return "_No per-sample records in this results file, so no confidence intervals: rerun the script._"
    n_volumes = len({str(r[0]) for r in sample})
    return (f"_{CI_HEADER}: percentile bootstrap over the {n_volumes} validation volumes (whole volumes resampled "
            f"with replacement, never slices: slices of one volume are not independent), {CI_RESAMPLES} resamples, "
            f"seed {CI_SEED}, statistic recomputed per resample as in the table (utils/eval/bootstrap.py)."
            + (" With so few volumes, read it as a guide to volume-to-volume spread._" if n_volumes < 10 else "_"))


def prompt_title(prompt: str) -> str:
    return PROMPT_TITLES.get(prompt, prompt)


def organ_table(summaries: dict[str, dict], with_n: bool = True) -> str:
    """Dice per organ (rows) and prompt type (columns) from {prompt: {"organs": {name: {"dice", "n"}}}}."""
    prompts = list(summaries)
    rows = []
    for name in ORGANS:
        cells = [summaries[p]["organs"].get(name) for p in prompts]
        if any(cells):
            n = next(c["n"] for c in cells if c)
            rows.append([name] + ([n] if with_n else []) + [c["dice"] if c else "-" for c in cells])
    return markdown_table(["organ"] + (["n"] if with_n else []) + [prompt_title(p) for p in prompts], rows)


def mdice_table(summaries: dict[str, dict], records: dict[str, list] | None = None) -> str:
    """Prompt Type | mDice (the study's Table 1 shape); with ``records`` ({prompt: [(case, organ, dice)]}),
    a 95 % CI column bootstrapped over volumes (see :func:`interval`)."""
    if records is None:
        return markdown_table(["Prompt Type", "mDice"], [[prompt_title(p), s["mDice"]] for p, s in summaries.items()])
    return markdown_table(["Prompt Type", "mDice", CI_HEADER],
                          [[prompt_title(p), s["mDice"], ci_cell(interval(records.get(p)))] for p, s in summaries.items()])


def table1(metrics: dict) -> str:
    """Table 1 (with 95 % CIs from the written records) and Dice per organ from Task 1's metrics.json."""
    records = metrics.get("records", {})
    return (f"{provenance_line(metrics['provenance'])}\n\n{mdice_table(metrics['prompts'], records)}\n"
            f"{ci_note(records)}\n\n#### Dice per organ\n\n{organ_table(metrics['prompts'])}")


def table2(metrics: dict) -> str:
    """Table 2 (original vs fine-tuned mDice, each with its 95 % CI, and the paired difference marked *
    when its interval excludes 0) and fine-tuned Dice per organ from Task 2's metrics.json."""
    s = metrics["settings"]
    records = metrics.get("records", {})
    original, tuned_records = records.get("original", {}), records.get("finetuned", {})
    rows = []
    for p, tuned in metrics["prompts"].items():
        before, after = metrics["original"][p]["mDice"], tuned["mDice"]
        gain = f"{100 * (after - before) / before:.2f}" if before > 0 else "n/a (original 0)"
        rows.append([prompt_title(p), before, ci_cell(interval(original.get(p))), after,
                     ci_cell(interval(tuned_records.get(p))), gain,
                     difference_cell(difference(tuned_records.get(p), original.get(p)))])
    runs = ", ".join(f"{p} `{tuned['run']['key']}`" for p, tuned in metrics["prompts"].items())
    chosen_on = (f"{s['val_samples_per_epoch']} validation samples" if s["val_samples_per_epoch"] < s["val_samples"]
                 else "the validation split")
    note = (f"Preset `{metrics['preset']}` ({s['epochs']} epochs, lr {s['learning_rate']}, batch {s['batch_size']}, "
            f"{s['samples_per_epoch'] or 'all'} samples/epoch, {s['aug_views']} augmented views"
            f"{training_precision_note(s.get('fast_path'))}). Fine-tuned = the "
            f"checkpoint with the best validation mDice, chosen on {chosen_on} and scored on the whole validation "
            f"split ({s['val_samples']} samples); choosing and scoring on one split follows the study and flatters "
            f"the fine-tuned column slightly. Original column {metrics['original_source']}. "
            f"Runs: {runs}.")
    table = markdown_table(["Prompt Type", "mDice(original)", CI_HEADER, "mDice(finetuned)", CI_HEADER,
                            "improved(%)", f"finetuned - original [{CI_HEADER}]"], rows)
    mark = ("_* : the paired interval of (fine-tuned - original) excludes 0 (both scored on the same samples; "
            "each resample draws the same volumes for both)._")
    return (f"{provenance_line(metrics['provenance'])}\n\n{note}\n\n{table}\n{ci_note(records)}\n{mark}\n\n"
            f"#### Fine-tuned Dice per organ\n\n{organ_table(metrics['prompts'], with_n=False)}")


# Table 3's measured rows: (label, oracle input, where the summary and records are). Same data, split,
# (slice, organ) samples and Dice code for all of them.
BASELINE_TITLES = {"unet": "U-Net", "resunet": "ResU-Net"}
BASELINE_ROWS = {"none": ("whole prediction", "none"),
                 "bound_box_crop": ("in box: prediction kept inside the organ's box", "ground-truth box (crop)")}
SAM_ROWS = {"bound_box": "ground-truth box (prompt)", "one_central_point": "one ground-truth point (prompt)"}
# The study's cited figures (its Table 3): published on real BTCV, from other papers' splits and Dice.
CITED = [("U-Net [7]", "92.1"), ("ResU-Net [8]", "92.4"), ("DeepLabV3 [9]", "89.2"), ("PIPO-FAN [10]", "93.6")]


def table3_rows(task2: dict | None, baselines: dict[str, dict] | None) -> list[dict]:
    """The measured block's rows: {"label", "oracle", "mDice", "records", "provenance"} in the table's order."""
    rows = []
    for arch, metrics in (baselines or {}).items():
        for name, (what, oracle) in BASELINE_ROWS.items():
            if name in metrics["prompts"]:
                rows.append({"label": f"{BASELINE_TITLES.get(arch, arch)}, {what}", "oracle": oracle,
                             "mDice": metrics["prompts"][name]["mDice"],
                             "records": metrics.get("records", {}).get(name), "provenance": metrics["provenance"]})
    if task2:
        tuned = task2.get("records", {}).get("finetuned", {})
        for prompt, oracle in SAM_ROWS.items():
            if prompt in task2["prompts"]:
                rows.append({"label": f"Fine-tuned SAM ({task2['model']}), {prompt_title(prompt).lower()}",
                             "oracle": oracle, "mDice": task2["prompts"][prompt]["mDice"],
                             "records": tuned.get(prompt), "provenance": task2["provenance"]})
    return rows


def table3(metrics: dict | None, baselines: dict[str, dict] | None = None) -> str | None:
    """Table 3 in two blocks: **measured here** (the U-Net / ResU-Net baselines' two rows from
    results/baseline/<arch>/metrics.json, and Task 2's fine-tuned SAM with a box and with one central
    point, each with its 95 % CI) and **cited by the study** (published figures, other data and
    protocols). ``metrics``: Task 2's metrics.json (or None); ``baselines``: {arch: metrics.json}.
    None when nothing was measured."""
    rows = table3_rows(metrics, baselines)
    if not rows:
        return None
    measured = markdown_table(["Model", "oracle input", "mDice", CI_HEADER],
                              [[r["label"], r["oracle"], r["mDice"], ci_cell(interval(r["records"]))] for r in rows])
    keys = {(r["provenance"].get("store_key"), r["provenance"].get("split")) for r in rows}
    samples = {tuple((str(c), int(o)) for c, o, _ in r["records"]) for r in rows if r["records"]}
    first = rows[0]["provenance"]
    if len(keys) == 1 and len(samples) <= 1:
        same = (f"All rows: {first['data']}, {first['split']} split, the same "
                f"{len(next(iter(samples))) if samples else '?'} (slice, organ) samples as Task 1, the suite's one Dice code.")
    else:
        same = ("**Warning: these rows were not all measured on the same store, split or samples** (rerun the "
                "baselines and Task 2 on one store); compare them with care.")
    missing = [BASELINE_TITLES[a] for a in BASELINE_TITLES if a not in (baselines or {})]
    if missing:
        same += f" Not run: {', '.join(missing)} (`python train_baseline.py --arch ...`)."
    if not metrics:
        same += " Fine-tuned SAM: not run (`python finetune_task2.py`)."
    trained = [(BASELINE_TITLES.get(a, a), m["provenance"]) for a, m in (baselines or {}).items()]
    trained += [("fine-tuned SAM", metrics["provenance"])] if metrics else []
    same += " Trained with: " + "; ".join(
        f"{name}, preset `{meta.get('preset')}`{training_precision_note(meta.get('training_fast_path'))}"
        for name, meta in trained) + "."
    cited = markdown_table(["Model", "Avg mDice (%)", "Measured on"],
                           [[name, value, "real BTCV, other papers' splits and protocols (cited, not measured here)"]
                            for name, value in CITED])
    records = next((r["records"] for r in rows if r["records"]), None)  # every row: the same samples
    return (f"**Measured here** (every number below measured by this suite). The U-Net rows use no prompt; their "
            f"'in box' rows keep each organ's prediction inside that organ's ground-truth box, the oracle SAM's box "
            f"prompt gets, so they compare like with like.\n\n{measured}\n{ci_note(records)} {same}\n\n"
            f"**Cited by the study** (published figures on real BTCV, from other data splits, training protocols "
            f"and Dice implementations: not comparable with the block above).\n\n{cited}")


def baseline_table(metrics: dict) -> str:
    """A baseline's two rows (whole prediction; kept inside the oracle box) with CIs, and Dice per organ."""
    records = metrics.get("records", {})
    rows = [[BASELINE_ROWS.get(name, (name,))[0], s["mDice"], ci_cell(interval(records.get(name)))]
            for name, s in metrics["prompts"].items()]
    return (f"{provenance_line(metrics['provenance'])} Preset `{metrics['preset']}`, run `{metrics['run']['key']}`, "
            f"best epoch {metrics['provenance'].get('best_epoch')}.\n\n"
            f"{markdown_table([BASELINE_TITLES.get(metrics['model'], metrics['model']), 'mDice', CI_HEADER], rows)}\n"
            f"{ci_note(records)}\n\n#### Dice per organ\n\n{organ_table(metrics['prompts'])}")


def training_precision_note(fast_path: dict | None) -> str:
    """', training forward in bf16 autocast' (or ', training forward in fp32'): the precision a run trained at,
    which ``--train-precision auto`` picks per machine; '' for an older run that did not record it."""
    precision = (fast_path or {}).get("train_precision")
    if precision is None:
        return ""
    return ", training forward in fp32" if precision == "fp32" else f", training forward in {precision} autocast"


def task3_settings_note(train_metrics: dict) -> str:
    """One sentence with the Task 3 run's preset and settings (train_metrics.json), or '' for an older file."""
    s = train_metrics.get("settings")
    if not s:
        return ""
    head = s.get("head_learning_rate") or s["learning_rate"]
    rates = (f"Adam lr {s['learning_rate']:g}" if head == s["learning_rate"] else
             f"Adam lr {s['learning_rate']:g} on the two-way transformer and {head:g} on the class token and head")
    fast = train_metrics.get("provenance", {}).get("training_fast_path")
    return (f"Preset `{train_metrics.get('preset')}`: {s['epochs']} epochs, {rates}, batch {s['batch_size']}, "
            f"{s['samples_per_epoch'] or 'all'} samples/epoch{training_precision_note(fast)}.")


def table4(metrics: dict) -> str:
    """Table 4 (classification accuracy per organ, weighted average and unweighted mean with 95 % CIs,
    baselines) from Task 3's metrics.json."""
    meta = metrics["provenance"]
    correct = metrics.get("records", {}).get("correct")
    rows = [[ORGAN_TITLES[ORGANS.index(name)], v["accuracy"], "", v["n"], f"{100 * v['share']:.2f}"]
            for name, v in metrics["organs"].items()]
    rows += [["**Weighted Average**", metrics["weighted_average"], ci_cell(interval(correct, "accuracy")),
              metrics["n"], "100.00"],
             ["Mean over organs (unweighted)", metrics["mean"], ci_cell(interval(correct, "mdice")), "", ""],
             [f"Majority-class baseline (always {organ_title(ORGANS.index(metrics['majority_organ']) + 1)})",
              metrics["majority_baseline"], "", "", ""]]
    table = markdown_table(["Organ Type", "Accuracy", CI_HEADER, "n", "share (%)"], rows)
    return (f"{provenance_line(meta)} Preset `{meta['preset']}`; classifier run `{meta['classifier_run']}`, "
            f"epoch {meta['classifier_epoch']}; starting weights: {meta['starting_weights']}.\n\n{table}\n"
            f"{ci_note(correct)}")


def _decoders_3d(tuned: dict | None) -> str:
    """The 3-D table's sentence naming its decoders (``metrics["finetuned"]``: None = zero-shot)."""
    if tuned and any(r.get("task2_identity", {}).get("task") == "interactive" for r in tuned.values()):
        r = next(iter(tuned.values()))
        decoders = (f"Decoder: the interactive decoder (finetune_interactive.py run `{r['run_key']}`, epoch "
                    f"{r['epoch']}, {r['checkpoint']}), one for every prompt type, trained on {r['trained_on']['data']} "
                    f"(store `{r['trained_on']['store_key']}`{', not this store' if r['other_data'] else ''}).")
    elif tuned:
        runs = "; ".join(f"{prompt_title(p)}: Task 2 run `{r['run_key']}` (epoch {r['epoch']}, {r['checkpoint']}), "
                         f"trained on {r['trained_on']['data']} (store `{r['trained_on']['store_key']}`"
                         f"{', not this store' if r['other_data'] else ''})" for p, r in tuned.items())
        decoders = f"Decoders: Task 2's fine-tuned prompt encoder + mask decoder per prompt type. {runs}."
    else:
        decoders = "Decoders: the model's pre-trained prompt encoder + mask decoder (zero-shot)."
    return decoders


def _clicks_3d(metrics: dict) -> tuple[str, str]:
    """(the clicks3d sentence, the Dice / NSD-after-each-click table), both empty without clicks3d."""
    clicks = list(metrics["modes"].get("clicks3d", {}).items())
    if not clicks:
        return "", ""
    settings = metrics["settings"]
    n = len(clicks[0][1]["dice_per_click"]) - 1
    sentence = (f"clicks3d: box3d, then {n} clicks per organ (largest 26-connected 3-D error component, its "
                "distance-transform maximum in mm; re-decoded with box + clicks"
                + (" + the previous low-res logits" if settings.get("click_mask_input", True) else "")
                + f", re-propagated {settings.get('click_repropagation', 'downstream')}). Dice / NSD AUC: the "
                "mean of the N + 1 points.")
    click_rows = [[prompt_title(p), " / ".join(f"{d:.3f}" for d in s["dice_per_click"]),
                   " / ".join(f"{d:.3f}" for d in s["nsd_per_click"]), s["dice_auc"], s["nsd_auc"]]
                  for p, s in clicks]
    table = ("\n#### 3-D clicks: Dice and NSD after 0.." + str(n) + " clicks\n\n" + markdown_table(
        ["start", "3-D Dice after 0.." + str(n) + " clicks", "NSD after 0.." + str(n) + " clicks", "Dice AUC",
         "NSD AUC"], click_rows))
    return sentence, table


def table3d(metrics: dict) -> str:
    """The 3-D table (per mode and prompt: 3-D Dice, slice-mean Dice, HD95, NSD, misses) and 3-D Dice per
    organ, from segmentation_3d.py's metrics.json."""
    meta = metrics["provenance"]
    decoders = _decoders_3d(metrics.get("finetuned"))
    cells = [(m, p, s) for m, by_prompt in metrics["modes"].items() for p, s in by_prompt.items()]
    rows = [[m.replace("_", " "), prompt_title(p), s["dice"], s["slice_dice"], f"{s['hd95_mm']:.1f}", s["nsd"],
             f"{s['n_missed']} / {sum(o['n_volumes'] for o in s['organs'].values())}",
             f"{s['reached_slices']} / {s['organ_slices']}" if "organ_slices" in s else
             "all" if m == "per_slice" else "-", s["decoded_prompts"]]
            for m, p, s in cells]
    table = markdown_table(["mode", "prompt", "3-D Dice", "slice-mean Dice", "HD95 (mm)", "NSD", "missed organs",
                            "organ slices reached", "prompts decoded"], rows)
    organ_rows = []
    for name in ORGANS:
        values = [s["organs"].get(name) for _, _, s in cells]
        if any(values):
            organ_rows.append([name] + [f"{v['dice']:.3f} / {v['nsd']:.3f}" if v else "-" for v in values])
    organs = markdown_table(["organ"] + [f"{m.replace('_', ' ')}, {prompt_title(p)}" for m, p, _ in cells], organ_rows)
    note = (f"{len(metrics['cases'])} volume(s) ({', '.join(metrics['cases'])}), every stored slice from each "
            f"volume's lowest organ slice - {meta['slice_margin']} to its highest + {meta['slice_margin']}. "
            f"{decoders} Per volume and organ, on the NIfTI label map written (source grid and spacing), then "
            "means over volumes per organ and over organs: Dice, HD95 in mm and NSD (FLARE22 tolerances: liver, "
            "stomach, pancreas 5 mm; spleen, kidneys, esophagus 3 mm; aorta, IVC, portal/splenic veins, adrenals, "
            "gallbladder 2 mm). An organ absent from a volume's ground truth is not scored there; a missed organ "
            "scores Dice 0, NSD 0 and HD95 = the volume's diagonal. Slice-mean Dice: the study's 2-D Dice of "
            "the same label map on each ground-truth slice of the organ, averaged. Propagation: one prompt on the "
            f"slice of largest area, stops below {metrics['settings']['min_area_mm2']:g} mm^2, each propagated box "
            f"grown by {metrics['settings'].get('box_margin_mm', 0):g} mm per side; organ slices reached = ground-truth "
            "organ slices the propagation kept a mask for, of those the organs have (per slice: every one is prompted).")
    settings = metrics["settings"]
    extra = []
    if "box3d" in metrics["modes"] or "clicks3d" in metrics["modes"]:
        extra.append("box3d: the key slice's box and the organ's first and last ground-truth slice; nothing predicted "
                     "outside them, a rejected slice inside does not stop the walk.")
    clicks_sentence, click_table = _clicks_3d(metrics)
    if clicks_sentence:
        extra.append(clicks_sentence)
    rules = [f"{k} {settings[k]:g}" for k in ("min_iou_previous", "max_area_factor", "min_predicted_iou")
             if settings.get(k)]
    if rules:
        where = ("in every protocol" if settings.get("rules_in_range") else
                 "in propagate only; inside box3d's range only the minimum area rejects a slice")
        extra.append(f"Extra stop rules: {', '.join(rules)} ({where}).")
    if settings.get("largest_component"):
        extra.append("Each organ's largest 3-D component kept.")
    note = " ".join([note] + extra)
    return (f"{provenance_line(meta)}\n\n{note}\n\n{table}{click_table}\n#### 3-D Dice / NSD per organ\n\n{organs}")


def table3d_compared(runs: dict[str, dict]) -> str:
    """Every decoder's 3-D results side by side ({decoder title: segmentation_3d.py metrics.json}): per mode and
    box-prompt cell, 3-D Dice / HD95 / NSD / organ slices reached, and the clicks3d Dice AUC."""
    modes = [m for m in ("per_slice", "propagate", "box3d", "clicks3d") if any(m in r["modes"] for r in runs.values())]
    prompts = sorted({p for r in runs.values() for m in modes for p in r["modes"].get(m, {})},
                     key=lambda p: (not p.endswith("box"), p))
    rows = []
    for title, metrics in runs.items():
        for prompt in prompts:
            cells = []
            for mode in modes:
                s = metrics["modes"].get(mode, {}).get(prompt)
                if s is None:
                    cells.append("-")
                    continue
                reached = f", {s['reached_slices']}/{s['organ_slices']}" if "organ_slices" in s else ""
                auc = f", AUC {s['dice_auc']:.3f}" if "dice_auc" in s else ""
                cells.append(f"{s['dice']:.3f} / {s['hd95_mm']:.1f} / {s['nsd']:.3f}{reached}{auc}")
            rows.append([title, prompt_title(prompt)] + cells)
    return ("3-D Dice / HD95 (mm) / NSD, mean over organs[, organ slices reached][, clicks3d Dice AUC], on the same "
            "volume(s) with each decoder.\n\n" + markdown_table(["decoder", "prompt"] + [m.replace("_", " ")
                                                                                       for m in modes], rows))


def table3d_organs_compared(runs: dict[str, dict], prompt: str = "bound_box") -> str:
    """Per organ and decoder ({decoder title: segmentation_3d.py metrics.json}), ``prompt`` starts: 3-D Dice per
    slice (a prompt on every slice) -> propagate and box3d (one box), each with its ratio to per slice (what
    holds in 3-D from one box), and the mean over organs. Organs and cells a run lacks are '-'."""
    def cell(s: dict | None, organ: str, base: float | None) -> str:
        value = None if s is None else (s["dice"] if organ == "mean" else s["organs"].get(organ, {}).get("dice"))
        if value is None:
            return "-"
        return f"{value:.3f}" + (f" ({value / base:.2f}x)" if base else "")

    titles = list(runs)
    rows = []
    for organ in [*ORGANS, "mean"]:
        row, seen = [organ], False
        for title in titles:
            modes = runs[title]["modes"]
            per_slice = modes.get("per_slice", {}).get(prompt)
            base_cell = cell(per_slice, organ, None)
            base = None if base_cell == "-" else float(base_cell)
            row += [base_cell] + [cell(modes.get(m, {}).get(prompt), organ, base) for m in ("propagate", "box3d")]
            seen = seen or base_cell != "-"
        if seen:
            rows.append(row)
    headers = ["organ"] + [f"{t}: {m}" for t in titles for m in ("per slice", "propagate", "box3d")]
    return (f"3-D Dice per organ ({prompt_title(prompt)} starts; in brackets: x its per-slice Dice), each decoder on "
            "the same volume(s).\n\n" + markdown_table(headers, rows))


def table_interactive(metrics: dict) -> str:
    """Dice after 0..N clicks and NoC@85/@90 per start prompt, NoC per organ, and this run's box-robustness
    rows, from interactive_task1.py's metrics.json."""
    n = metrics["clicks"]
    starts = metrics["starts"]
    rows = [[prompt_title(p), s["n"], *s["dice_per_click"], s["noc"]["85"], s["noc"]["90"]] for p, s in starts.items()]
    curve = markdown_table(["Start prompt", "n", *[f"mDice@{k}" for k in range(n + 1)], "NoC@85", "NoC@90"], rows)
    organ_rows = []
    for name in ORGANS:
        cells = [starts[p]["organs"].get(name) for p in starts]
        if any(cells):
            organ_rows.append([name, next(c["n"] for c in cells if c)]
                              + [x for c in cells for x in ((c["dice_per_click"][0], c["dice_per_click"][-1],
                                                             c["noc"]["85"], c["noc"]["90"]) if c else ("-",) * 4)])
    organs = markdown_table(["organ", "n"] + [f"{prompt_title(p)} {h}" for p in starts
                                              for h in ("Dice@0", f"Dice@{n}", "NoC@85", "NoC@90")], organ_rows)
    decoders = "; ".join(f"{prompt_title(p)}: {s['decoder']}" for p, s in starts.items())
    note = (f"{metrics['samples']['n']} of {metrics['samples']['of']} {metrics['split']} samples "
            f"({metrics['samples']['selection']}); {n} correction clicks, rule `{metrics['click_rule']}`, previous "
            f"logits as mask input {'on' if metrics['mask_input'] else 'off'}, single-mask output. "
            f"{metrics['noc_convention']}. Decoders: {decoders}.")
    text = (f"{provenance_line(metrics['provenance'])}\n\n{note}\n\n{curve}\n"
            f"#### Per organ (Dice after 0 and {n} clicks, NoC)\n\n{organs}")
    if metrics.get("box_robustness"):
        text += f"\n#### Box robustness\n\n{table_box_robustness({robustness_label(metrics): metrics})}"
    return text


def robustness_label(metrics: dict) -> str:
    """The column name of a run's box-robustness numbers: which bound-box decoder made them."""
    robustness = metrics["box_robustness"]
    if robustness.get("kind") == "interactive decoder":
        return "interactive decoder"
    return "fine-tuned box decoder" if robustness["fine_tuned"] else "zero-shot"


def table_box_robustness(runs: dict[str, dict]) -> str:
    """Bound-box mDice per box jitter (rows) for each run (columns) from interactive metrics.json files,
    e.g. {"zero-shot": m0, "fine-tuned box decoder": m1}; runs without a box-robustness table are left out."""
    runs = {label: m["box_robustness"] for label, m in runs.items() if m and m.get("box_robustness")}
    jitters = sorted({int(j) for r in runs.values() for j in r["jitters"]})
    rows = [[j] + [r["jitters"].get(str(j), {}).get("mDice", "-") for r in runs.values()] for j in jitters]
    table = markdown_table(["box jitter (slice px, each side)"] + list(runs), rows)
    decoders = "; ".join(f"{label}: {r['decoder']}" for label, r in runs.items())
    return (f"{table}\nEach side of the tight box moved by a seeded integer shift in [-j, +j] px, clipped to the "
            f"slice (`jittered_box`); jitter 0 is the tight box. Decoders: {decoders}.\n")


def titled(title: str, body: str | None, level: str = "#") -> str:
    return f"{level} {title}\n\n{body}" if body else ""


__all__: Sequence[str] = ["baseline_table", "ci_cell", "difference_cell", "interval", "mdice_table", "organ_table",
                          "table1", "table2", "table3", "table3d", "table4", "table_box_robustness",
                          "table_interactive", "titled"]
