"""Interactive segmentation: a start prompt, then correction clicks, scored after every click.

    python interactive_task1.py                                  # LiteMedSAM, phantom store, val split, 10 clicks
    python interactive_task1.py --preset quick                   # make reproduce's version (5 clicks, 2 samples/organ)
    python interactive_task1.py --preset quick --finetuned auto  # the same with Task 2's decoder per start prompt
    python interactive_task1.py --preset quick --finetuned interactive   # the interactive decoder (one for all)
    python interactive_task1.py --start jittered_box --box-jitter 10 --click-rule random --no-mask-input
    python interactive_task1.py --preset quick --finetuned interactive --refine local --refine-window 64

For every (slice, organ) sample of the split (or a fixed, seeded subset of --samples-per-organ per
organ), round 0 decodes the start prompt (SAM's single mask, as in the study and Task 1: the same
draw, so round 0 is Task 1's Dice for that sample). Each of --clicks rounds then adds ONE correction
click where the mask is wrong (``center``: the deepest pixel of the largest missed or leaked region,
positive or negative; ``random``: a seeded uniform error pixel) and decodes the start prompt plus
all clicks so far, with the previous round's low-res logits as SAM's mask input (unless
--no-mask-input; --compare-mask-input scores every start both ways). A perfect sample gets no more
clicks. --refine local keeps each round's new mask only in the click's own change (FocalClick's merge in a
--refine-window px window that grows by --refine-growth while the change touches its edge; utils/inference/
refinement.py); --compare-refine scores every start with the other refinement as well. Everything decodes
from the embedding cache, batched across samples (utils/eval/sessions.py runs the sessions,
utils/inference/rounds.py holds the protocol).

Scores: Dice after 0..N clicks (per organ: mean over its samples; mDice: mean over organs), NoC@85/@90,
the clicks needed to reach Dice 0.85/0.90 (0 if the start prompt does, N if never), and the Dice AUC,
the mean of the N + 1 points of the curve (utils/eval/auc.py); per organ the mean over its samples, at
the top the mean over organs, like mDice; the click response (utils/eval/click_response.py): the share of
rounds whose clicked pixel the decoder set to the click's label, and the pixels it fixed and broke inside
and outside the click's own change. Then the box-robustness table: bound-box mDice with each side
of the box moved by up to 0/5/10/20 slice px (``jittered_box``), with the same decoder as the bound-box
start (the fine-tuned one with --finetuned).

Writes results/interactive/ (results/interactive_finetuned/ with Task 2's decoders, results/
interactive_trained/ with the interactive decoder): metrics.json, table_interactive.md, per_sample.csv,
dice_vs_clicks_<start>.png, rounds_<start>.png, config.json.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from utils.inference.clicks import CLICK_RULES, REFINE_MODES  # noqa: E402
from utils.inference.prompts import DEFAULT_BOX_JITTER_PX  # noqa: E402
from utils.scaffold.config import parse_with_presets  # noqa: E402
from utils.scaffold.flags import add_finetuned_args, new_task_parser  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Hyperparameters: edit here, or override with the flag of the same name (--clicks 20).
HYPERPARAMETERS = {
    "PRESET": ("full", "full (the constants here: every sample of the split) or quick (make reproduce)"),
    "START": ("bound_box,one_central_point", "comma-separated start prompt types (any of Task 1's, or 'all')"),
    "CLICKS": (10, "correction-click rounds after the start prompt (SAM-Med2D reports 1/3/5/10)", "positive"),
    "MASK_INPUT": (True, "give each round the previous round's low-res logits as SAM's mask input "
                         "(SAM's own iterative protocol); --no-mask-input decodes prompts only"),
    "SAMPLES_PER_ORGAN": (0, "at most this many (slice, organ) samples per organ, a fixed subset drawn with --seed; "
                             "0 = every sample of the split"),
    "JITTERS": ("0,5,10,20", "box-robustness table: bound-box mDice at these box jitters (slice px); 'none' = no table"),
    "BOX_JITTER": (DEFAULT_BOX_JITTER_PX, "for a jittered_box START: each side moves by up to this many slice px"),
    "COMPARE_MASK_INPUT": (False, "also score every start with the mask input flipped (on <-> off), for the "
                                  "side-by-side curves (results: mask_input_compared)"),
    "REFINE": ("global", "what a round's new mask replaces: global (all of it, SAM's rule) or local (only the "
                         "click's own change, FocalClick's merge; docs/interactive.md)", REFINE_MODES),
    "REFINE_WINDOW": (0, "local: side in slice px of the window around the click the change is searched in "
                         "(0 = the whole slice)"),
    "REFINE_GROWTH": (1.4, "local: the window grows by this factor while the change touches its edge, up to 4x "
                           "(FocalClick's 1.4; nnInteractive grows 1.5x up to 4x)", "positive"),
    "COMPARE_REFINE": (False, "also score every start with the other refinement (global <-> local), for the "
                              "side-by-side curves (results: refine_compared)"),
    "DECODE_BATCH": (0, "samples decoded together in every round; 0 = auto (8 on a CPU, 64 on a GPU)"),
}
PRESETS = {
    "full": {},
    # make reproduce: both starts, 5 clicks (the quick protocol), zero-shot and fine-tuned, and
    # the jitter table, in <= 90 s on 2 CPU cores. Decoding runs ~20 prompts/s there; each sample costs
    # 2 starts x 6 rounds + 4 jitters = 16 decodes per decoder, so 2 samples per organ (26 samples on
    # the phantom's validation split) is ~420 decodes per invocation (README, "Interactive segmentation").
    # (3 per organ until the Task 2 and Task 3 quick presets needed the time to learn.)
    # Since 2026-12-08 (issue 34): a third start, the 5 px jittered box (the start a person gives), and both
    # refinements instead of both mask inputs (the mask-input comparison stays a flag, its figures in
    # docs/interactive.md): 3 starts x 2 refinements x 6 rounds per sample.
    "quick": {"clicks": 5, "samples_per_organ": 2, "start": "bound_box,one_central_point,jittered_box",
              "compare_refine": True},
}
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None):
    parser = new_task_parser(__doc__, HYPERPARAMETERS, split="val")
    parser.add_argument("--click-rule", choices=CLICK_RULES, default="center",
                        help="center (default): deepest pixel of the largest error region; random: a seeded "
                             "uniform error pixel (SAM-Med2D)")
    add_finetuned_args(parser, default="none")
    from utils.inference.prompts import parse_prompt_types

    return parse_with_presets(parser, argv, PRESETS, checks={"start": parse_prompt_types, "jitters": parse_jitters})


def parse_jitters(text: str) -> list[int]:
    """'0,5,10,20' -> [0, 5, 10, 20]; 'none' or '' -> []."""
    if text.strip() in ("", "none"):
        return []
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = [-1]
    if any(v < 0 for v in values):
        raise ValueError(f"--jitters {text!r}: expected comma-separated whole pixel counts >= 0 (e.g. 0,5,10,20) "
                         "or 'none'")
    return values


def refinement_of(args, mode: str | None = None):
    """The flags' refinement (utils.inference.clicks.Refinement); ``mode`` overrides --refine."""
    from utils.inference.clicks import Refinement

    return Refinement(mode or args.refine, args.refine_window, args.refine_growth)


def other_refinement(args) -> str:
    return "local" if args.refine == "global" else "global"


def protocol_of(args, mask_input: bool | None = None, refine: str | None = None):
    """The session protocol of the flags (utils.eval.sessions.Protocol); ``mask_input``/``refine`` override them."""
    from utils.eval.sessions import Protocol

    return Protocol(clicks=args.clicks, rule=args.click_rule, seed=args.seed, box_jitter=args.box_jitter,
                    mask_input=args.mask_input if mask_input is None else mask_input, batch_size=args.decode_batch,
                    refinement=refinement_of(args, refine))


def response_line(summary: dict) -> str:
    """The click response in one line (utils.eval.click_response)."""
    r = summary.get("click_response") or {}
    if not r.get("rounds"):
        return "no clicks"
    return (f"clicked pixel corrected in {r['corrected_share']:.0%} of {r['rounds']} rounds; pixels fixed/broken "
            f"inside the click's change {r['fixed_inside']}/{r['broken_inside']}, outside {r['fixed_outside']}/"
            f"{r['broken_outside']}")


def score_start(ev, start: str, choice, samples, example) -> tuple[dict, list[list], int]:
    """One start prompt: its sessions, Dice-vs-clicks, NoC and Dice AUC summary, its figures; returns
    (summary, per-sample CSV rows, prompts decoded)."""
    from utils.core.organs import organ_name
    from utils.eval.noc import NOC_THRESHOLDS
    from utils.eval.sessions import run_sessions
    from utils.inference.prompts import PROMPT_TITLES
    from utils.report.examples import sample_caption
    from utils.report.plots import save_dice_vs_clicks, save_rounds

    args, exp = ev.args, ev.exp
    done = run_sessions(ev.cache, samples, start, ev.decoder(choice), protocol_of(args), keep=example,
                        progress=not args.no_progress)
    summary, shown = done.summary(), done.shown
    rows = []
    for (row, organ), curve, clicks in zip(samples, done.dice, done.clicks):
        record = exp.store.records[ev.cache.index.store_index(row)]
        rows.append([start, record.case_id, record.z, organ_name(organ), len(clicks)] + [f"{d:.6f}" for d in curve])
    curve = " ".join(f"{d:.3f}" for d in summary["dice_per_click"])
    print(f"  {PROMPT_TITLES[start]:<20} mDice after 0..{args.clicks} clicks: {curve}; NoC@85 "
          f"{summary['noc']['85']:.2f}, NoC@90 {summary['noc']['90']:.2f}, Dice AUC {summary['dice_auc']:.3f}  "
          f"({choice.source}, refine {args.refine})")
    print(f"    {response_line(summary)}")
    kind = ev.decoder_title
    title = f"{PROMPT_TITLES[start]} start, {kind} ({exp.model.name}, {exp.store.description}, {args.split} split)"
    if ev.is_main:
        save_dice_vs_clicks({kind: summary}, ev.out / f"dice_vs_clicks_{start}.png", f"Dice vs clicks: {title}",
                            NOC_THRESHOLDS)
        save_rounds(ev.cache.view(example[0])[0], shown["truth"], shown["masks"], shown["start_prompt"],
                    shown["clicks"], shown["dice"], ev.out / f"rounds_{start}.png",
                    f"{sample_caption(ev.cache, *example)}: {title}")
    return dict(summary, decoder=choice.source, refine=refinement_of(args).record()), rows, done.decoded


def score_other_refinement(ev, start: str, choice, samples) -> tuple[dict, int]:
    """The same sessions under the other refinement (global <-> local). Returns (summary, prompts decoded)."""
    from utils.eval.sessions import run_sessions

    args, other = ev.args, other_refinement(ev.args)
    done = run_sessions(ev.cache, samples, start, ev.decoder(choice), protocol_of(args, refine=other))
    summary = done.summary()
    curve = " ".join(f"{d:.3f}" for d in summary["dice_per_click"])
    print(f"    refine {other}: {curve}; Dice AUC {summary['dice_auc']:.3f}")
    return dict(summary, decoder=choice.source, refine=refinement_of(args, other).record()), done.decoded


def score_other_mask_input(ev, start: str, choice, samples) -> tuple[dict, int]:
    """The same sessions with the mask input flipped (on <-> off): what the fed-back logits do to this
    decoder's curve. Returns (summary, prompts decoded)."""
    from utils.eval.sessions import run_sessions

    args = ev.args
    done = run_sessions(ev.cache, samples, start, ev.decoder(choice), protocol_of(args, not args.mask_input))
    summary = done.summary()
    curve = " ".join(f"{d:.3f}" for d in summary["dice_per_click"])
    print(f"    mask input {'off' if args.mask_input else 'on'}: {curve}; Dice AUC {summary['dice_auc']:.3f}")
    return dict(summary, decoder=choice.source, mask_input=not args.mask_input), done.decoded


def box_robustness(ev, choice, samples, jitters: list[int], decoded_start: dict | None = None) -> dict:
    """Bound-box mDice with each side of the box moved by up to each jitter (``jittered_box``), decoded with
    the bound-box start's decoder. ``decoded_start``: the jittered_box start's summary when it was scored with
    this decoder: its round 0 is the very draw at --box-jitter, taken instead of decoded again."""
    levels = {}
    for jitter in jitters:
        if decoded_start is not None and jitter == ev.args.box_jitter:
            levels[str(jitter)] = {"mDice": decoded_start["dice_per_click"][0], "n": decoded_start["n"],
                                   "source": "round 0 of the jittered_box start (the same draw)"}
        else:
            levels[str(jitter)], _ = ev.score_prompt(samples, "jittered_box", choice, jitter, progress=False)
        print(f"  bound box jittered by up to {jitter:>2} px: mDice {levels[str(jitter)]['mDice']:.4f}")
    return {"decoder": choice.source, "fine_tuned": choice.handoff is not None, "kind": ev.decoder_kind,
            "jitters": levels}


def results_header(ev, decoders: dict, samples: list, everything: list, subset: str) -> dict:
    """The results dict before any start is scored: settings, the sample subset, the NoC convention."""
    args = ev.args
    records = {p: d.record for p, d in decoders.items()}
    meta = ev.provenance(n_samples=len(samples), preset=args.preset, multimask_output=False,
                         box_jitter=args.box_jitter, finetuned=records if ev.finetuned else None)
    return ev.header(
        meta, finetuned={"choice": args.finetuned, "decoders": records} if ev.finetuned else None,
        click_rule=args.click_rule, mask_input=args.mask_input, clicks=args.clicks, multimask_output=False,
        box_jitter=args.box_jitter, refine=refinement_of(args).record(),
        samples={"n": len(samples), "of": len(everything), "per_organ": args.samples_per_organ, "selection": subset},
        noc_convention=(f"NoC@t: clicks to reach Dice >= t, counted as {args.clicks} (the clicks available) when "
                        "never reached; per organ the mean over its samples, at the top the mean over organs "
                        "(as mDice)"),
        starts={}, mask_input_compared={} if args.compare_mask_input else None,
        refine_compared={} if args.compare_refine else None, box_robustness=None)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from utils.eval.sessions import per_organ_subset
    from utils.inference.prompts import parse_prompt_types
    from utils.report.examples import median_example
    from utils.report.tables import table_interactive, titled
    from utils.scaffold.evaluation import Evaluation

    ev = Evaluation(args, "interactive")
    starts = ev.parse(parse_prompt_types, args.start)
    jitters = ev.parse(parse_jitters, args.jitters)
    ev.parse(lambda mode: refinement_of(args, mode), args.refine)  # a bad window or growth: one line, before loading
    ev.open()
    # The box-robustness table uses the bound-box decoder (Task 2's, with --finetuned), whatever the starts.
    box_decoder = jitters or "jittered_box" in starts
    decoders = ev.open_decoders(list(dict.fromkeys(starts + (["bound_box"] if box_decoder else []))))
    if "jittered_box" in starts and args.finetuned == "auto":
        # Task 2 trains no jittered-box decoder: a jittered box is a box, decoded by the bound-box one (as the
        # box-robustness table does), not by the pre-trained fallback
        decoders["jittered_box"] = decoders["bound_box"]
    ev.encode(ev.split_rows())
    everything = ev.samples()
    samples = per_organ_subset(everything, args.samples_per_organ, args.seed)
    example = median_example(samples, ev.cache)  # the sample the rounds figures show
    subset = (f"{args.samples_per_organ} per organ (fewer where an organ has fewer), drawn with seed {args.seed}"
              if args.samples_per_organ else "every sample of the split")
    print(ev.describe(f"{len(ev.rows)} {args.split} slices, {len(samples)} of {len(everything)} organ samples "
                      f"({subset})", f"{args.clicks} clicks, rule {args.click_rule}, mask input "
                      f"{'on' if args.mask_input else 'off'}, refine {args.refine}"))

    results = results_header(ev, decoders, samples, everything, subset)
    per_sample_rows, decoded = [], 0
    t_rounds = time.perf_counter()
    for start in starts:
        results["starts"][start], rows, n = score_start(ev, start, decoders[start], samples, example)
        per_sample_rows += rows
        decoded += n
        if args.compare_mask_input:
            results["mask_input_compared"][start], n = score_other_mask_input(ev, start, decoders[start], samples)
            decoded += n
        if args.compare_refine:
            results["refine_compared"][start], n = score_other_refinement(ev, start, decoders[start], samples)
            decoded += n
    rounds_seconds = time.perf_counter() - t_rounds
    t_jitter = time.perf_counter()
    if jitters:
        jittered = results["starts"].get("jittered_box")
        same_decoder = jittered is not None and decoders["jittered_box"].source == decoders["bound_box"].source
        results["box_robustness"] = box_robustness(ev, decoders["bound_box"], samples, jitters,
                                                   jittered if same_decoder else None)
        decoded += len(samples) * sum(1 for v in results["box_robustness"]["jitters"].values() if "source" not in v)
    jitter_seconds = time.perf_counter() - t_jitter

    decode_seconds = rounds_seconds + jitter_seconds
    results["timing"] = ev.timing(decoded_prompts=decoded, decoded_prompts_per_second=ev.rate(decoded, decode_seconds),
                                  rounds_seconds=round(rounds_seconds, 2),
                                  jitter_table_seconds=round(jitter_seconds, 2), **ev.clock())
    headers = ["start", "case", "z", "organ", "clicks_made"] + [f"dice_after_{k}" for k in range(args.clicks + 1)]
    table = titled(f"Interactive segmentation ({ev.decoder_title})", table_interactive(results))
    ev.write(results, {"table_interactive.md": table}, {"per_sample.csv": (headers, per_sample_rows)})
    print(f"\n{table_interactive(results)}")
    print(f"{decoded} prompts decoded in {decode_seconds:.1f} s; wall {results['timing']['wall_seconds']} s, "
          f"CPU {results['timing']['cpu_seconds']} s")
    print(f"wrote {ev.out / 'metrics.json'} and {ev.out / 'table_interactive.md'}")
    return 0


if __name__ == "__main__":
    from utils.scaffold.boundary import run_script  # the one error boundary (--debug: tracebacks)

    sys.exit(run_script(main))
