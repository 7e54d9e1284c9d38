"""What every results file says about where its numbers came from (:func:`provenance`), writing
results files (metrics JSON, Markdown tables, config.json, CSV, training curves), and reading them back
(:func:`read_results`: a damaged one is named with the command that rewrites it).
"""
from __future__ import annotations

import datetime as _dt
import json
import platform
from pathlib import Path
from typing import Any, Sequence

import torch

from utils.core.device import describe
from utils.core.errors import ResultsError
from utils.core.hashing import file_sha256
from utils.core.io import write_json, write_text
from utils.data.slice_store import SliceStore
from utils.models.sam import SamModel


class TrainedWeights:
    """What :func:`provenance` states about the model for a network a script trained itself (a baseline U-Net),
    in place of a SAM model: its name, its best checkpoint and that file's digest."""

    def __init__(self, name: str, checkpoint: Path):
        self.name, self.checkpoint = name, str(checkpoint)
        self.checkpoint_sha256 = file_sha256(checkpoint)


def provenance(store: SliceStore, model: SamModel, device: torch.device, seed: int, split: str,
               precision: str = "fp32", encoder_precision: str = "fp32", **extra: Any) -> dict:
    """Data, model, checkpoint digest, device, seed and date: stated with every number the suite writes."""
    return {
        "data": store.description,
        "slice_store": str(store.path),
        "store_key": store.key,
        "split": split,
        "model": model.name,
        "checkpoint": model.checkpoint,
        "checkpoint_sha256": model.checkpoint_sha256,
        "device": describe(device),
        "precision": precision,  # the decoder's (--precision)
        "encoder_precision": encoder_precision,
        "seed": seed,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        **extra,
    }


def results_header(meta: dict, **fields: Any) -> dict:
    """A metrics.json's first keys: model, checkpoint, data and split from its :func:`provenance` ``meta``, then
    ``fields`` in order."""
    return {**{k: meta[k] for k in ("model", "checkpoint", "data", "split")}, **fields}


def scored_alike(meta: dict, store: SliceStore, model: SamModel, seed: int, split: str, precision: str,
                 encoder_precision: str) -> bool:
    """True when a results file's provenance says its numbers were scored on this store, model weights,
    split, seed and decoder/encoder precision: what a script checks before reusing another's scores."""
    return all(meta.get(key) == value for key, value in (
        ("store_key", store.key), ("checkpoint_sha256", model.checkpoint_sha256), ("split", split), ("seed", seed),
        ("precision", precision), ("encoder_precision", encoder_precision)))


def write_training_curves(folder: Path, run, history: dict, curves: dict[str, list[float]],
                          panels: Sequence[tuple[str, str]], title: str) -> None:
    """A training run's curves: ``history.json`` (the curves, epochs, best epoch and the run's key) in
    ``folder``, and ``curves.png`` there and in the run's own folder (utils.scaffold.runs.Run)."""
    from utils.report.plots import save_curves

    write_json(folder / "history.json", dict(curves, epoch=history["epoch"], best_epoch=history["best_epoch"],
                                             run=run.record))
    for target in (run.path, folder):
        save_curves(curves, panels, target / "curves.png", title)


def read_results(path: Path, rewrite: str) -> dict | None:
    """A results JSON file (a metrics.json, summary.json, ...) as a dict; None when there is none.

    A file that is there but cannot be used (unreadable, truncated or otherwise not JSON, not a JSON object)
    raises ResultsError naming it and ``rewrite``, the command that writes it again.
    """
    path = Path(path)
    if not path.is_file():
        return None

    def damaged(problem: str) -> ResultsError:
        return ResultsError(f"{path}: damaged or unreadable results file ({problem}); rerun `{rewrite}` to rewrite it")

    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise damaged(f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(data, dict):
        raise damaged(f"holds a JSON {type(data).__name__}, not an object")
    return data


def config_record(args) -> dict:
    """A script's final settings (argparse namespace) as plain JSON values, for config.json and checkpoints."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


def write_results(out: Path, metrics: dict | None = None, tables: dict[str, str] | None = None,
                  config: dict | None = None, metrics_name: str = "metrics.json") -> None:
    """Write a task's metrics JSON, its Markdown tables and config.json into ``out`` (each atomically)."""
    if metrics is not None:
        write_json(out / metrics_name, metrics)
    for name, text in (tables or {}).items():
        write_text(out / name, text)
    if config is not None:
        write_json(out / "config.json", config)


def write_csv(path: str | Path, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(headers)
    writer.writerows(rows)
    write_text(path, buffer.getvalue())
