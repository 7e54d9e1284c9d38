"""The results folder as make_report.py reads it: each JSON file read once, a missing one None, a damaged one
named with the command that writes it again (:data:`REWRITES`)."""
from __future__ import annotations

from pathlib import Path

from utils.core.errors import ResultsError
from utils.scaffold.results import read_results

# The command that writes each results file again (named when one is damaged).
REWRITES = {
    "preprocess/summary.json": "python preprocess_slices.py --phantom (or --data-root BTCV_DIR)",
    "task1/metrics.json": "python segmentation_task1.py",
    "task2/metrics.json": "python finetune_task2.py --preset quick",
    "task3/train_metrics.json": "python classify_train_task3.py --preset quick",
    "task3/metrics.json": "python classify_val_task3.py",
    "interactive/metrics.json": "python interactive_task1.py --preset quick",
    "interactive_finetuned/metrics.json": "python interactive_task1.py --preset quick --finetuned auto",
    "interactive_trained/metrics.json": "python interactive_task1.py --preset quick --finetuned interactive",
    "interactive_training/metrics.json": "python finetune_interactive.py --preset quick",
    "task1_trained/metrics.json": "python segmentation_task1.py --finetuned interactive",
    "baseline/unet/metrics.json": "python train_baseline.py --arch unet",
    "baseline/resunet/metrics.json": "python train_baseline.py --arch resunet",
    "task3d/metrics.json": "python segmentation_3d.py --slices data/slices_3d",
    "segment_volume/0035_labels.json": "python segment_volume.py --image data/phantom_3d/RawData/Training/img/"
                                       "img0035.nii.gz --prompts results/segment_volume/prompts_0035.json --out "
                                       "results/segment_volume/0035_labels.nii.gz --score-against "
                                       "data/phantom_3d/RawData/Training/label/label0035.nii.gz",
    "task3d_trained/metrics.json": "python segmentation_3d.py --slices data/slices_3d --finetuned interactive "
                                   "--finetuned-store data/slices",
    "task3d_finetuned/metrics.json": "python segmentation_3d.py --slices data/slices_3d --finetuned auto "
                                     "--finetuned-store data/slices",
    "task3d_propagation/metrics.json": "python segmentation_3d.py --slices data/slices_3d --finetuned propagation "
                                       "--finetuned-store data/slices",
    "task3d/store/preprocess/summary.json": "python preprocess_slices.py --phantom --data-root data/phantom_3d "
                                            "--phantom-cases 35 --phantom-extent abdomen --phantom-slices 50 "
                                            "--slice-margin 2 --out "
                                            "data/slices_3d --results results/task3d/store",
    "study.json": "python run_study.py --phantom (make reproduce)",
}
BASELINE_ARCHS = ("unet", "resunet")


class ResultsFiles:
    """The results folder's JSON files, each read once: missing ones are None; a damaged one raises
    ResultsError (naming the file and the command that rewrites it) and is remembered in ``damaged``."""

    def __init__(self, root: Path):
        self.root = root
        self.damaged: dict[str, ResultsError] = {}
        self._read: dict[str, dict | None] = {}

    def get(self, name: str) -> dict | None:
        if name in self.damaged:
            raise self.damaged[name]
        if name not in self._read:
            try:
                self._read[name] = read_results(self.root / name, REWRITES[name])
            except ResultsError as exc:
                self.damaged[name] = exc
                raise
        return self._read[name]

    def readable(self, name: str) -> dict | None:
        """Like :meth:`get`, but a damaged file reads as None (the overview skips it; its section says why)."""
        try:
            return self.get(name)
        except ResultsError:
            return None

    def baselines(self) -> dict[str, dict]:
        """Table 3's measured baselines that have been run: {arch: metrics}."""
        return {arch: m for arch in BASELINE_ARCHS if (m := self.get(f"baseline/{arch}/metrics.json"))}
