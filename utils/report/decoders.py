"""Tables that put the decoders side by side: zero-shot, Task 2's per-prompt decoders and the interactive
decoder (finetune_interactive.py), on the interactive protocol and on Task 1's five prompts.

Every table reads the metrics.json files the evaluation scripts wrote; a decoder whose file is missing is
left out (its column or rows are absent, never filled in).
"""
from __future__ import annotations

from utils.inference.prompts import PROMPT_TITLES
from utils.report.markdown import markdown_table

# The decoders in the order the report shows them, with the folders their interactive results live in.
INTERACTIVE_FOLDERS = {"zero-shot": "interactive", "Task 2's decoder": "interactive_finetuned",
                       "interactive decoder": "interactive_trained"}
TASK1_FOLDERS = {"zero-shot": "task1", "interactive decoder": "task1_trained"}


def _curve_row(label: str, summary: dict) -> list:
    auc = summary.get("dice_auc")
    return [label, *summary["dice_per_click"], summary["noc"]["85"], summary["noc"]["90"],
            "-" if auc is None else auc]


def _refine_label(summary: dict, run: dict) -> str:
    refine = summary.get("refine") or run.get("refine") or {"mode": "global"}
    if refine["mode"] == "global":
        return "refine global"
    window = f"window {refine['window']} px" if refine.get("window") else "whole slice"
    return f"refine local ({window})"


def sessions_compared(runs: dict[str, dict]) -> str:
    """Per start prompt: each decoder's mDice after 0..N clicks, NoC@85/@90 and Dice AUC, as run and, where the
    run compared them, with the mask input flipped and under the other refinement (global <-> local).
    ``runs``: {decoder label: interactive metrics.json}."""
    runs = {label: m for label, m in runs.items() if m}
    clicks = {m["clicks"] for m in runs.values()}
    if not runs or len(clicks) != 1:
        return ""
    n = clicks.pop()
    starts = list(dict.fromkeys(s for m in runs.values() for s in m["starts"]))
    out = []
    for start in starts:
        rows = []
        for label, m in runs.items():
            if start not in m["starts"]:
                continue
            on = "on" if m["mask_input"] else "off"
            mine = m["starts"][start]
            rows.append(_curve_row(f"{label}, mask input {on}, {_refine_label(mine, m)}", mine))
            other = (m.get("mask_input_compared") or {}).get(start)
            if other:
                rows.append(_curve_row(f"{label}, mask input {'off' if m['mask_input'] else 'on'}, "
                                       f"{_refine_label(mine, m)}", other))
            other = (m.get("refine_compared") or {}).get(start)
            if other:
                rows.append(_curve_row(f"{label}, mask input {on}, {_refine_label(other, m)}", other))
        headers = ["decoder", *[f"mDice@{k}" for k in range(n + 1)], "NoC@85", "NoC@90", "Dice AUC"]
        out += [f"#### {PROMPT_TITLES.get(start, start)} start", "", markdown_table(headers, rows)]
    some = next(iter(runs.values()))
    note = (f"{some['samples']['n']} {some['split']} samples ({some['samples']['selection']}), {n} clicks, rule "
            f"`{some['click_rule']}`. Dice AUC: the mean of the {n + 1} points of the curve (utils/eval/auc.py). "
            "Mask input: the previous round's low-res logits given back to the prompt encoder. Refine local: a "
            "round's new mask is kept only in the click's own change (FocalClick's merge; utils/inference/"
            "refinement.py).")
    return note + "\n\n" + "\n".join(out)


def click_response_compared(runs: dict[str, dict]) -> str:
    """Per decoder and start: how often the decoder set the clicked pixel to the click's label, and the pixels
    its new masks fixed and broke inside and outside the click's own change (utils/eval/click_response.py),
    from the runs' main protocol (the decoder's own mask, before any local merge)."""
    rows = []
    for label, m in runs.items():
        for start, summary in ((m or {}).get("starts") or {}).items():
            r = summary.get("click_response")
            if not r or not r.get("rounds"):
                continue
            rows.append([label, PROMPT_TITLES.get(start, start), r["rounds"], f"{r['corrected_share']:.0%}",
                         r["fixed_inside"], r["broken_inside"], r["fixed_outside"], r["broken_outside"]])
    if not rows:
        return ""
    return markdown_table(["decoder", "start", "rounds", "clicked pixel corrected", "fixed inside", "broken inside",
                           "fixed outside", "broken outside"], rows)


def prompts_compared(task1: dict | None, task2: dict | None, trained: dict | None) -> str:
    """mDice per Task 1 prompt type: zero-shot (Task 1), Task 2's decoder for that prompt, and the one
    interactive decoder (Task 1 scored with ``--finetuned interactive``): what generality costs."""
    columns = {"zero-shot": (task1 or {}).get("prompts", {}),
               "Task 2's decoder (one per prompt)": (task2 or {}).get("prompts", {}),
               "interactive decoder (one for all)": (trained or {}).get("prompts", {})}
    columns = {k: v for k, v in columns.items() if v}
    if "interactive decoder (one for all)" not in columns:
        return ""
    prompts = list(columns["interactive decoder (one for all)"])
    rows = [[PROMPT_TITLES.get(p, p)] + [c[p]["mDice"] if p in c else "-" for c in columns.values()] for p in prompts]
    return markdown_table(["Prompt Type", *columns], rows)
