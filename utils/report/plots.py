"""Figures: phantom montage, prompt overlays, training curves, confusion matrix, class examples.

Every figure is written atomically as PNG with matplotlib's Agg backend (no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from utils.core.io import atomic_path  # noqa: E402
from utils.core.organs import NUM_ORGANS, ORGAN_TITLES  # noqa: E402

_CMAP = plt.get_cmap("tab20", NUM_ORGANS + 1)


def _save(fig, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def label_overlay(ax, image: np.ndarray, label: np.ndarray, alpha: float = 0.45) -> None:
    """Draw a (H, W) [0, 1] slice with its 0..13 label map in organ colours."""
    ax.imshow(image, cmap="gray", vmin=0, vmax=1)
    colours = _CMAP(np.arange(NUM_ORGANS + 1))
    colours[0, 3] = 0.0
    rgba = colours[label]
    rgba[..., 3] = np.where(label > 0, alpha, 0.0)
    ax.imshow(rgba)
    ax.set_axis_off()


def save_montage(slices: Sequence[tuple[np.ndarray, np.ndarray, str]], path: str | Path, title: str) -> Path:
    """A grid of (image, label, caption) slices with label overlays, and an organ legend."""
    n = len(slices)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows + 0.8), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (image, label, caption) in zip(axes.flat, slices):
        label_overlay(ax, image, label)
        ax.set_title(caption, fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=_CMAP(i + 1)) for i in range(NUM_ORGANS)]
    fig.legend(handles, ORGAN_TITLES, loc="lower center", ncol=5, fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(bottom=0.12)
    return _save(fig, path)


def draw_prompt(ax, prompt, colour: str = "yellow") -> None:
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
        ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=1.2))
    else:
        ax.scatter(prompt.points[:, 0], prompt.points[:, 1], marker="*", s=60, c=colour, edgecolors="black", linewidths=0.5)


def save_prompt_overlays(examples: Sequence[dict], path: str | Path, title: str) -> Path:
    """Rows of (image | ground truth | prediction with the prompt drawn) for a few examples.

    Each example: {"image", "truth" bool, "pred" bool, "prompt", "caption"}.
    """
    fig, axes = plt.subplots(len(examples), 3, figsize=(8.4, 2.8 * len(examples)), squeeze=False)
    for row, ex in zip(axes, examples):
        for ax in row:
            ax.imshow(ex["image"], cmap="gray", vmin=0, vmax=1)
            ax.set_axis_off()
        row[1].imshow(np.ma.masked_where(~ex["truth"], ex["truth"]), cmap="autumn", alpha=0.5)
        row[2].imshow(np.ma.masked_where(~ex["pred"], ex["pred"]), cmap="winter", alpha=0.5)
        draw_prompt(row[2], ex["prompt"])
        row[0].set_title(ex["caption"], fontsize=8)
        row[1].set_title("ground truth", fontsize=8)
        row[2].set_title(f"prediction (Dice {ex['dice']:.3f})", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def save_curves(history: dict[str, list[float]], panels: Sequence[tuple[str, str]], path: str | Path,
                title: str) -> Path:
    """One panel per (history key, y label), against epoch (1-based)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (key, ylabel) in zip(axes[0], panels):
        values = history.get(key, [])
        ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(ylabel, fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def save_confusion(matrix: np.ndarray, labels: Sequence[str], path: str | Path, title: str) -> Path:
    """Row-normalised confusion matrix (rows: true organ, columns: predicted organ), counts annotated."""
    rows = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            if matrix[i, j]:
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted organ")
    ax.set_ylabel("true organ")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def save_class_examples(examples: Sequence[dict], path: str | Path, title: str) -> Path:
    """The study's Figure 3: raw slice beside the prompted region, with true and predicted organ.

    Each example: {"image", "mask" bool, "prompt", "truth" str, "predicted" str}.
    """
    fig, axes = plt.subplots(len(examples), 2, figsize=(6.0, 2.9 * len(examples)), squeeze=False)
    for row, ex in zip(axes, examples):
        row[0].imshow(ex["image"], cmap="gray", vmin=0, vmax=1)
        row[0].set_title("slice", fontsize=8)
        ys, xs = np.nonzero(ex["mask"])
        pad = 12
        y0, y1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, ex["image"].shape[0])
        x0, x1 = max(xs.min() - pad, 0), min(xs.max() + pad + 1, ex["image"].shape[1])
        row[1].imshow(ex["image"][y0:y1, x0:x1], cmap="gray", vmin=0, vmax=1)
        row[1].contour(ex["mask"][y0:y1, x0:x1], levels=[0.5], colors="yellow", linewidths=1)
        ok = ex["truth"] == ex["predicted"]
        row[1].set_title(f"true: {ex['truth']}\npredicted: {ex['predicted']}", fontsize=8,
                         color="green" if ok else "red")
        row[0].add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="yellow"))
        for ax in row:
            ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def save_slice_profiles(profiles: dict[str, dict[str, list]], path: str | Path, title: str) -> Path:
    """Per organ, the slice Dice along z of each protocol: where along the organ the masks go wrong.

    profiles: {protocol: {organ name: [[z, Dice], ...]}} (one volume; segmentation_3d.py's ``slice_profiles``).
    One panel per organ (BTCV order), x = slice z (display stack, inferior to superior), one line per protocol.
    """
    from utils.core.organs import ORGANS

    organs = [name for name in ORGANS if any(name in by_organ for by_organ in profiles.values())]
    columns = 4
    rows = max(1, -(-len(organs) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.2 * rows), squeeze=False)
    styles = {"per_slice": ("black", "-"), "propagate": ("tab:orange", "--"), "box3d": ("tab:blue", "-"),
              "clicks3d": ("tab:green", ":")}
    for ax, name in zip(axes.ravel(), organs):
        for protocol, by_organ in profiles.items():
            if name in by_organ and by_organ[name]:
                z, dice = zip(*by_organ[name])
                color, line = styles.get(protocol, ("grey", "-"))
                ax.plot(z, dice, color=color, linestyle=line, marker=".", markersize=3, linewidth=1.1,
                        label=protocol.replace("_", " "))
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(organs):]:
        ax.axis("off")
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower right", fontsize=8)
    fig.supxlabel("slice z (inferior -> superior)", fontsize=8)
    fig.supylabel("slice Dice", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def save_dice_scatter(modes: dict, path: str | Path, title: str) -> Path:
    """Per organ, slice-mean Dice (x) against 3-D Dice (y), one panel per prompt type, one marker per mode.

    modes: {mode: {prompt: {"organs": {name: {"dice", "slice_dice"}}}}} (segmentation_3d.py's metrics.json).
    Points below the diagonal: the volume scores worse than the mean of its slices (small, badly segmented
    end slices weigh little in a slice mean, but their voxels and surfaces count in 3-D).
    """
    from utils.core.organs import ORGANS

    prompts = list(dict.fromkeys(p for by_prompt in modes.values() for p in by_prompt))  # box3d/clicks3d: boxes only
    fig, axes = plt.subplots(1, len(prompts), figsize=(4.4 * len(prompts), 4.2), squeeze=False)
    markers = {"per_slice": "o", "propagate": "^"}
    for ax, prompt in zip(axes[0], prompts):
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="--")
        for mode, by_prompt in modes.items():
            if prompt not in by_prompt:
                continue
            organs = by_prompt[prompt]["organs"]
            for name, o in organs.items():
                label = ORGANS.index(name) + 1
                ax.scatter(o["slice_dice"], o["dice"], marker=markers.get(mode, "s"), color=_CMAP(label), s=36,
                           edgecolors="black", linewidths=0.4)
                ax.annotate(str(label), (o["slice_dice"], o["dice"]), fontsize=6, xytext=(3, 2),
                            textcoords="offset points")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("slice-mean Dice")
        ax.set_ylabel("3-D Dice")
        ax.set_title(prompt.replace("_", " "), fontsize=9)
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], marker=markers.get(m, "s"), linestyle="", color="black", label=m.replace("_", " "))
               for m in modes]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8)
    fig.suptitle(title + "\n(numbers: BTCV labels 1-13)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _save(fig, path)


def save_volume_views(image: np.ndarray, panels: Sequence[tuple[str, np.ndarray]], spacing: Sequence[float],
                      path: str | Path, title: str) -> Path:
    """Coronal (top row) and sagittal (bottom row) planes through one volume: one column per label map.

    image: float (Z, H, W) in [0, 1], the slice store's display stack (row 0 anterior, column 0 the
    patient's right, z inferior -> superior); panels: (caption, uint8 (Z, H, W) labels) in the same layout;
    spacing: (z, row, column) in mm, for the aspect ratio. The planes pass through the centre of the
    first panel's labels; superior is up, the patient's right on the left (radiological).
    """
    truth = panels[0][1] > 0
    zs, hs, ws = np.nonzero(truth) if truth.any() else np.indices(truth.shape).reshape(3, -1)
    h, w = int(np.median(hs)), int(np.median(ws))
    fig, axes = plt.subplots(2, len(panels), figsize=(3.0 * len(panels), 5.6), squeeze=False)
    for col, (caption, label) in enumerate(panels):
        for row, (plane, cut, aspect) in enumerate((("coronal", np.s_[:, h, :], spacing[0] / spacing[2]),
                                                    ("sagittal", np.s_[:, :, w], spacing[0] / spacing[1]))):
            ax = axes[row, col]
            label_overlay(ax, image[cut][::-1], label[cut][::-1])
            ax.set_aspect(aspect)
            ax.set_title(f"{caption}, {plane}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def save_label_picture(image: np.ndarray, label: np.ndarray, spacing: Sequence[float], key_slices: Sequence[int],
                       path: str | Path, title: str) -> Path:
    """A segmented CT at a glance (segment_volume.py): axial panels at each prompt's key slice (at most 6), then a
    coronal and a sagittal plane through the organs, aspect from ``spacing``, with a legend of the organs the map
    holds. image: float (Z, H, W) in [0, 1], label: uint8 (Z, H, W), the display stack (row 0 anterior, column 0
    the patient's right, z inferior -> superior); spacing: (z, row, column) mm."""
    zs = sorted(dict.fromkeys(int(z) for z in key_slices))[:6]
    found = label > 0
    zz, hh, ww = np.nonzero(found) if found.any() else np.indices(found.shape).reshape(3, -1)
    h, w = int(np.median(hh)), int(np.median(ww))
    n = len(zs) + 2
    fig, axes = plt.subplots(1, n, figsize=(2.8 * n, 3.6), squeeze=False)
    for ax, z in zip(axes[0], zs):
        label_overlay(ax, image[z], label[z])
        ax.set_aspect(spacing[1] / spacing[2])
        ax.set_title(f"axial z = {z}", fontsize=8)
    for ax, (plane, cut, aspect) in zip(axes[0][len(zs):], (("coronal", np.s_[:, h, :], spacing[0] / spacing[2]),
                                                            ("sagittal", np.s_[:, :, w], spacing[0] / spacing[1]))):
        label_overlay(ax, image[cut][::-1], label[cut][::-1])
        ax.set_aspect(aspect)
        ax.set_title(f"{plane} ({'row' if plane == 'coronal' else 'column'} {h if plane == 'coronal' else w})",
                     fontsize=8)
    present = [int(v) for v in np.unique(label) if v]
    handles = [plt.Rectangle((0, 0), 1, 1, color=_CMAP(v)) for v in present]
    if handles:
        fig.legend(handles, [ORGAN_TITLES[v - 1] for v in present], loc="lower center", ncol=min(5, len(handles)),
                   fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(bottom=0.18)
    return _save(fig, path)


def save_dice_vs_clicks(curves: dict[str, dict], path: str | Path, title: str,
                        thresholds: Sequence[float] = (0.85, 0.90)) -> Path:
    """Dice after 0..N clicks: mDice in the first panel, then one small panel per organ.

    ``curves``: {label: one start prompt's summary from ``utils.eval.noc.summarise_rounds``}
    ({"dice_per_click": [...], "organs": {name: {"dice_per_click", "n"}}}); each label is one line, so
    zero-shot and fine-tuned can share a figure. Dashed lines mark the NoC thresholds.
    """
    from utils.core.organs import ORGANS

    organs = [o for o in ORGANS if any(o in c["organs"] for c in curves.values())]
    panels = [("mDice (mean over organs)", {k: c["dice_per_click"] for k, c in curves.items()})]
    for name in organs:
        panels.append((f"{ORGAN_TITLES[ORGANS.index(name)]} (n={next(c['organs'][name]['n'] for c in curves.values() if name in c['organs'])})",
                       {k: c["organs"][name]["dice_per_click"] for k, c in curves.items() if name in c["organs"]}))
    cols = min(5, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.7 * cols, 2.3 * rows + 0.6), squeeze=False, sharex=True,
                             sharey=True)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (name, lines) in zip(axes.flat, panels):
        ax.set_axis_on()
        for label, values in lines.items():
            ax.plot(range(len(values)), values, marker="o", markersize=2.5, label=label)
        for t in thresholds:
            ax.axhline(t, color="grey", linestyle="--", linewidth=0.7)
        ax.set_ylim(0, 1)
        ax.set_title(name, fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, loc="lower right")
    axes[0, 0].xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    for ax in axes[-1]:
        ax.set_xlabel("clicks", fontsize=8)
    axes[0, 0].set_ylabel("Dice", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def save_rounds(image: np.ndarray, truth: np.ndarray, masks: np.ndarray, start_prompt, clicks: Sequence,
                dice: Sequence[float], path: str | Path, title: str, margin: int = 12) -> Path:
    """One sample's rounds: the slice with its ground truth, then the mask after 0..N clicks.

    image: (H, W) [0, 1]; truth: bool (H, W); masks: bool (N + 1, H, W) (``Rounds.masks`` of the sample);
    start_prompt: a ``utils.inference.prompts.Prompt`` (drawn yellow); clicks: ``utils.inference.clicks.Click`` (x, y,
    label) in order, positive green, negative red, each drawn from the round it was added; dice: (N + 1,).
    Panels are cropped to the organ, the start prompt and the clicks, plus ``margin`` px (a leak far
    away is cut off; the Dice in each title counts it).
    """
    ys, xs = np.nonzero(truth)
    px = [xs.min(), xs.max()] + [c.x for c in clicks]
    py = [ys.min(), ys.max()] + [c.y for c in clicks]
    if start_prompt.box is not None:
        px += [start_prompt.box[0], start_prompt.box[2]]
        py += [start_prompt.box[1], start_prompt.box[3]]
    if start_prompt.points is not None:
        px += start_prompt.points[:, 0].tolist()
        py += start_prompt.points[:, 1].tolist()
    h, w = truth.shape
    y0, y1 = max(int(min(py)) - margin, 0), min(int(max(py)) + margin + 1, h)
    x0, x1 = max(int(min(px)) - margin, 0), min(int(max(px)) + margin + 1, w)
    extent = (x0 - 0.5, x1 - 0.5, y1 - 0.5, y0 - 0.5)  # imshow in slice pixel coordinates
    n = len(masks)
    fig, axes = plt.subplots(1, n + 1, figsize=(2.2 * (n + 1), 2.6), squeeze=False)
    axes = axes[0]
    for ax in axes:
        ax.imshow(image[y0:y1, x0:x1], cmap="gray", vmin=0, vmax=1, extent=extent)
        ax.set_xlim(x0 - 0.5, x1 - 0.5)
        ax.set_ylim(y1 - 0.5, y0 - 0.5)
        ax.set_axis_off()
    crop = truth[y0:y1, x0:x1]
    axes[0].imshow(np.ma.masked_where(~crop, crop), cmap="autumn", alpha=0.5, extent=extent)
    axes[0].set_title("ground truth", fontsize=8)
    for r, ax in enumerate(axes[1:]):
        pred = masks[r][y0:y1, x0:x1]
        ax.imshow(np.ma.masked_where(~pred, pred), cmap="winter", alpha=0.5, extent=extent)
        ax.contour(np.arange(x0, x1), np.arange(y0, y1), crop, levels=[0.5], colors="orange", linewidths=0.6)
        draw_prompt(ax, start_prompt)
        for c in clicks[:r]:
            ax.scatter([c.x], [c.y], s=28, c="lime" if c.label else "red", edgecolors="black", linewidths=0.5,
                       marker="o")
        ax.set_title(f"{r} click{'s' if r != 1 else ''}: Dice {dice[r]:.3f}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
