"""Every table of the study, rendered from the metrics dicts the scripts write (metrics.json).

The scripts write their table*.md files with these functions, and make_report.py renders the report's
tables with the same functions from the same metrics.json: one rendering of each table, no splicing.
Each function returns Markdown without a title line (the caller adds '# ...' or '### ...').
"""
from __future__ import annotations

from typing import Sequence

from .organs import ORGAN_TITLES, ORGANS, organ_title
from .prompts import PROMPT_TITLES
from .reporting import markdown_table, provenance_line


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


def mdice_table(summaries: dict[str, dict]) -> str:
    """Prompt Type | mDice (the study's Table 1 shape)."""
    return markdown_table(["Prompt Type", "mDice"], [[prompt_title(p), s["mDice"]] for p, s in summaries.items()])


def table1(metrics: dict) -> str:
    """Table 1 and Dice per organ from Task 1's metrics.json."""
    return (f"{provenance_line(metrics['provenance'])}\n\n{mdice_table(metrics['prompts'])}\n"
            f"#### Dice per organ\n\n{organ_table(metrics['prompts'])}")


def table2(metrics: dict) -> str:
    """Table 2 (original vs fine-tuned mDice) and fine-tuned Dice per organ from Task 2's metrics.json."""
    s = metrics["settings"]
    rows = []
    for p, tuned in metrics["prompts"].items():
        before, after = metrics["original"][p]["mDice"], tuned["mDice"]
        gain = f"{100 * (after - before) / before:.2f}" if before > 0 else "n/a (original 0)"
        rows.append([prompt_title(p), before, after, gain])
    runs = ", ".join(f"{p} `{tuned['run']['key']}`" for p, tuned in metrics["prompts"].items())
    chosen_on = (f"{s['val_samples_per_epoch']} validation samples" if s["val_samples_per_epoch"] < s["val_samples"]
                 else "the validation split")
    note = (f"Preset `{metrics['preset']}` ({s['epochs']} epochs, lr {s['learning_rate']}, batch {s['batch_size']}, "
            f"{s['samples_per_epoch'] or 'all'} samples/epoch, {s['aug_views']} augmented views). Fine-tuned = the "
            f"checkpoint with the best validation mDice, chosen on {chosen_on} and scored on the whole validation "
            f"split ({s['val_samples']} samples); choosing and scoring on one split follows the study and flatters "
            f"the fine-tuned column slightly. Original column {metrics['original_source']}. "
            f"Runs: {runs}.")
    table = markdown_table(["Prompt Type", "mDice(original)", "mDice(finetuned)", "improved(%)"], rows)
    return (f"{provenance_line(metrics['provenance'])}\n\n{note}\n\n{table}\n"
            f"#### Fine-tuned Dice per organ\n\n{organ_table(metrics['prompts'], with_n=False)}")


def table3(metrics: dict) -> str | None:
    """Table 3 (published baselines beside the suite's fine-tuned bound box), or None without that prompt."""
    if "bound_box" not in metrics["prompts"]:
        return None
    ours = 100 * metrics["prompts"]["bound_box"]["mDice"]
    table = markdown_table(
        ["Model", "U-Net[7]", "ResU-Net[8]", "DeepLabV3[9]", "PIPO-FAN[10]", f"Fine-tuned {metrics['model']} (bound box)"],
        [["Avg mDice(%)", "92.1", "92.4", "89.2", "93.6", f"{ours:.1f}"],
         ["Measured on", "real BTCV (published)", "real BTCV (published)", "real BTCV (published)",
          "real BTCV (published)", f"{metrics['data']}, val split, measured by this suite"]])
    return ("The four baselines are published figures on real BTCV, cited from the study report, not measured "
            "here. The last column is this suite's own measurement; compare across columns only when it was "
            f"measured on real BTCV.\n\n{table}")


def table4(metrics: dict) -> str:
    """Table 4 (classification accuracy per organ, weighted average, baselines) from Task 3's metrics.json."""
    meta = metrics["provenance"]
    rows = [[ORGAN_TITLES[ORGANS.index(name)], v["accuracy"], v["n"], f"{100 * v['share']:.2f}"]
            for name, v in metrics["organs"].items()]
    rows += [["**Weighted Average**", metrics["weighted_average"], metrics["n"], "100.00"],
             ["Mean over organs (unweighted)", metrics["mean"], "", ""],
             [f"Majority-class baseline (always {organ_title(ORGANS.index(metrics['majority_organ']) + 1)})",
              metrics["majority_baseline"], "", ""]]
    table = markdown_table(["Organ Type", "Accuracy", "n", "share (%)"], rows)
    return (f"{provenance_line(meta)} Preset `{meta['preset']}`; classifier run `{meta['classifier_run']}`, "
            f"epoch {meta['classifier_epoch']}; starting weights: {meta['starting_weights']}.\n\n{table}")


def table3d(metrics: dict) -> str:
    """The 3-D table (per mode and prompt: 3-D Dice, slice-mean Dice, HD95, NSD, misses) and 3-D Dice per
    organ, from segmentation_3d.py's metrics.json."""
    meta = metrics["provenance"]
    if metrics.get("finetuned"):
        runs = "; ".join(f"{prompt_title(p)}: Task 2 run `{r['run_key']}` (epoch {r['epoch']}, {r['checkpoint']}), "
                         f"trained on {r['trained_on']['data']} (store `{r['trained_on']['store_key']}`"
                         f"{', not this store' if r['other_data'] else ''})" for p, r in metrics["finetuned"].items())
        decoders = f"Decoders: Task 2's fine-tuned prompt encoder + mask decoder per prompt type. {runs}."
    else:
        decoders = "Decoders: the model's pre-trained prompt encoder + mask decoder (zero-shot)."
    cells = [(m, p, s) for m, by_prompt in metrics["modes"].items() for p, s in by_prompt.items()]
    rows = [[m.replace("_", " "), prompt_title(p), s["dice"], s["slice_dice"], f"{s['hd95_mm']:.1f}", s["nsd"],
             f"{s['n_missed']} / {sum(o['n_volumes'] for o in s['organs'].values())}", s["decoded_prompts"]]
            for m, p, s in cells]
    table = markdown_table(["mode", "prompt", "3-D Dice", "slice-mean Dice", "HD95 (mm)", "NSD", "missed organs",
                            "prompts decoded"], rows)
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
            f"slice of largest area, stops below {metrics['settings']['min_area_mm2']:g} mm^2.")
    return (f"{provenance_line(meta)}\n\n{note}\n\n{table}\n#### 3-D Dice / NSD per organ\n\n{organs}")
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
    return "fine-tuned box decoder" if metrics["box_robustness"]["fine_tuned"] else "zero-shot"


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


__all__: Sequence[str] = ["mdice_table", "organ_table", "table1", "table2", "table3", "table3d", "table4", "table_box_robustness",
                          "table_interactive", "titled"]
