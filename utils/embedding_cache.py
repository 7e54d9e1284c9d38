"""Image-encoder outputs, computed once per slice (and per augmented view) and memory-mapped.

The image encoder is frozen in every task, so Tasks 1-3 read its embeddings from here instead of
running it. A cache lives in ``data/embeddings/<model>-<kind>-<key>/``:

    signature.json   everything the embeddings depend on: model, checkpoint digest, slice-store key,
                     preprocessing (described, and a digest of its output on the first slice), encoder
                     precision, augmentation, cache format version
    embeddings.npy   float16 (rows, 256, 64, 64), memory-mapped (see :class:`MappedNpy`)
    done.npy         bool (rows,): which rows are encoded (rewritten atomically after every batch)
    labels.npy       uint8 (rows, H, W), augmented caches only: each view's transformed label

The folder name carries a hash of the signature, and the signature is checked again on every open,
so a changed model, checkpoint, store or setting always means a new cache, never a stale read. An
interrupted run resumes at the first row not marked done. Rows are written before ``done`` marks them.

Kinds: ``base`` has one row per store slice (the slice as stored). ``aug`` has ``views`` rows per
training slice: the slice and its label transformed together by MONAI (random flip, rotation,
intensity shift), seeded per (seed, slice, view) so a view is the same every time it is built.
"""
from __future__ import annotations

import hashlib
import json
import math
import mmap
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .io import atomic_path, read_json, write_json
from .models import SamModel
from .precision import autocast
from .slice_store import SliceStore

# 2: "precision" became "encoder_precision"; 3: "input_probe" (a digest of the preprocessed first slice)
CACHE_FORMAT_VERSION = 3
DEFAULT_CACHE_ROOT = Path(__file__).resolve().parent.parent / "data" / "embeddings"


@dataclass(frozen=True)
class AugmentSpec:
    """Materialised augmentation: ``views`` transformed copies of every training slice."""

    views: int
    seed: int = 0
    flip_prob: float = 0.5
    rotate_degrees: float = 15.0
    intensity_shift: float = 0.1  # in window units ([0, 1] = the whole HU window)

    def transform(self):
        """The MONAI transform applied to {"image": (1, H, W) float, "label": (1, H, W)}."""
        from monai.transforms import Compose, RandFlipd, RandRotated, RandShiftIntensityd

        return Compose(
            [
                RandFlipd(keys=["image", "label"], prob=self.flip_prob, spatial_axis=1),
                RandRotated(
                    keys=["image", "label"], range_x=math.radians(self.rotate_degrees), prob=1.0,
                    mode=("bilinear", "nearest"), padding_mode="zeros", keep_size=True,
                ),
                RandShiftIntensityd(keys=["image"], offsets=self.intensity_shift, prob=1.0),
            ]
        )


def augment_view(image: np.ndarray, label: np.ndarray, spec: AugmentSpec, store_index: int, view: int):
    """The deterministic augmented view ``view`` (1-based) of a slice: (image float32 in [0, 1], label uint8)."""
    transform = spec.transform()
    transform.set_random_state(seed=int(np.random.default_rng([spec.seed, store_index, view]).integers(2**31)))
    out = transform({"image": image[None].astype(np.float32), "label": label[None].astype(np.float32)})
    aug_image = np.clip(np.asarray(out["image"][0], dtype=np.float32), 0.0, 1.0)
    aug_label = np.asarray(out["label"][0]).round().astype(np.uint8)
    return aug_image, aug_label


def input_probe(model: SamModel, store: SliceStore) -> str:
    """Digest of the encoder input the model's preprocessing makes from the store's first slice.

    ``preprocessing`` in the signature only describes the code; this catches a change in what the code
    actually does (a new resize or normalisation) that its description did not follow. It costs one
    resize, and no encoder pass.
    """
    if len(store) == 0:
        return "empty"
    x = model.prepare_image(store.load(0)[0]).cpu().numpy().astype(np.float32)
    return hashlib.sha256(x.tobytes()).hexdigest()[:16]


class MappedNpy:
    """A .npy file memory-mapped as an ndarray, whose pages this process can let go of after use.

    A mapping keeps every page it has touched resident in the process: reading a whole cache through
    ``np.load(mmap_mode=...)`` makes peak RSS grow with the number of slices. :meth:`release` drops
    them (MADV_DONTNEED; the data stay in the file and the OS page cache), so memory stays flat in the
    store size however many rows a task reads.
    """

    def __init__(self, path: Path, writable: bool = False):
        self.path = Path(path)
        self.writable = writable
        try:
            with open(self.path, "r+b" if writable else "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran_order, dtype = read_header(f)
                offset = f.tell()
                self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ)
            self.array = np.ndarray(shape, dtype, buffer=self._mmap, offset=offset,
                                    order="F" if fortran_order else "C")
        except (OSError, ValueError, TypeError) as exc:
            raise RuntimeError(
                f"{self.path}: not a readable cache array ({exc}); delete the folder {self.path.parent} "
                "and rerun to rebuild it"
            ) from exc
        if not writable:
            self.array.flags.writeable = False

    def release(self) -> None:
        """Write dirty pages back (writable maps) and drop every mapped page from this process."""
        if self.writable:
            self._mmap.flush()
        if hasattr(mmap, "MADV_DONTNEED"):
            self._mmap.madvise(mmap.MADV_DONTNEED)


class EmbeddingCache:
    """A memory-mapped cache of one model's embeddings of one store (base) or its augmented views."""

    def __init__(
        self,
        model: SamModel,
        store: SliceStore,
        augment: AugmentSpec | None = None,
        root: str | Path = DEFAULT_CACHE_ROOT,
        encoder_precision: str = "fp32",
        decoder_precision: str = "fp32",
    ):
        self.model = model
        self.store = store
        self.augment = augment
        self.encoder_precision = encoder_precision  # part of the signature: it changes the embeddings
        self.decoder_precision = decoder_precision  # how readers decode them (utils.evaluation); not stored
        if augment is None:
            self.kind = "base"
            self.sources = [(i, 0) for i in range(len(store))]
        else:
            if augment.views < 1:
                raise ValueError("an augmented cache needs views >= 1")
            self.kind = "aug"
            self.sources = [(i, v) for i in store.indices("train") for v in range(1, augment.views + 1)]
        self.signature = {
            "format_version": CACHE_FORMAT_VERSION,
            "model": model.name,
            "checkpoint_sha256": model.checkpoint_sha256,
            "store_key": store.key,
            "preprocessing": model.preprocessing,
            "input_probe": input_probe(model, store),
            "encoder_precision": encoder_precision,
            "dtype": "float16",
            "kind": self.kind,
            "augment": asdict(augment) if augment else None,
            "rows": len(self.sources),
        }
        key = hashlib.sha256(json.dumps(self.signature, sort_keys=True).encode()).hexdigest()[:16]
        self.path = Path(root) / f"{model.name}-{self.kind}-{key}"
        self._open()
        self._organs: dict[int, dict[int, int]] = {}

    # ----------------------------------------------------------------------------------- storage
    def _open(self) -> None:
        if not (self.path / "signature.json").is_file():
            self._create()
        stored = read_json(self.path / "signature.json")
        if stored != self.signature:
            raise RuntimeError(
                f"{self.path}: cache signature does not match this run (stored {stored}, wanted {self.signature}); "
                "delete the folder to rebuild it"
            )
        self._embeddings = MappedNpy(self.path / "embeddings.npy")
        self.done = np.load(self.path / "done.npy")
        self._labels = MappedNpy(self.path / "labels.npy") if self.kind == "aug" else None

    def _create(self) -> None:
        prompt_encoder = self.model.sam.prompt_encoder
        shape = (prompt_encoder.embed_dim, *prompt_encoder.image_embedding_size)
        tmp = self.path.with_name(self.path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        n = len(self.sources)
        np.lib.format.open_memmap(tmp / "embeddings.npy", mode="w+", dtype=np.float16, shape=(n, *shape)).flush()
        np.save(tmp / "done.npy", np.zeros(n, dtype=bool))
        if self.kind == "aug":
            sizes = {self.store.load(i)[1].shape for i, _ in self.sources[:: max(self.augment.views, 1)]}
            if len(sizes) != 1:
                raise ValueError(f"{self.store.path}: augmented views need one slice size, the store has {sizes}")
            (h, w), = sizes
            np.lib.format.open_memmap(tmp / "labels.npy", mode="w+", dtype=np.uint8, shape=(n, h, w)).flush()
        write_json(tmp / "signature.json", self.signature)
        tmp.rename(self.path)

    def _save_done(self) -> None:
        with atomic_path(self.path / "done.npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, self.done)

    def _encode(self, batch: torch.Tensor) -> torch.Tensor:
        with autocast(batch.device, self.encoder_precision):
            return self.model.sam.image_encoder(batch).float()

    # ----------------------------------------------------------------------------------- building
    def view(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """(image float32 (H, W) in [0, 1], label uint8 (H, W)) of cache row ``row``, as encoded."""
        store_index, view = self.sources[row]
        image, label = self.store.load(store_index)
        if view == 0:
            return image, label
        return augment_view(image, label, self.augment, store_index, view)

    def ensure(self, rows: Sequence[int] | None = None, batch_size: int = 8, progress: bool = True) -> int:
        """Encode every row of ``rows`` (default: all) not yet in the cache. Returns how many it encoded."""
        from tqdm import tqdm

        wanted = range(len(self.sources)) if rows is None else rows
        todo = sorted({int(r) for r in wanted if not self.done[int(r)]})
        if not todo:
            return 0
        embeddings = MappedNpy(self.path / "embeddings.npy", writable=True)
        labels = MappedNpy(self.path / "labels.npy", writable=True) if self.kind == "aug" else None
        bar = tqdm(total=len(todo), desc=f"encoding ({self.model.name}, {self.kind})", unit="slice", disable=not progress)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            images = []
            for row in chunk:
                image, label = self.view(row)
                if labels is not None:
                    labels.array[row] = label
                images.append(self.model.prepare_image(image))
            with torch.inference_mode():
                batch = torch.stack(images).to(self.model.device, non_blocking=True)
                out = self._encode(batch).to(torch.float16).cpu().numpy()
            embeddings.array[chunk] = out
            embeddings.release()
            if labels is not None:
                labels.release()
            self.done[chunk] = True  # only after the rows are on disk
            self._save_done()
            bar.update(len(chunk))
        bar.close()
        return len(todo)

    # ----------------------------------------------------------------------------------- reading
    def __len__(self) -> int:
        return len(self.sources)

    def rows_for(self, split: str) -> list[int]:
        """Cache rows whose slice belongs to ``split``."""
        wanted = set(self.store.indices(split))
        return [r for r, (i, _) in enumerate(self.sources) if i in wanted]

    def embeddings(self, rows: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
        """float32 (len(rows), 256, 64, 64) embeddings; every row must be encoded."""
        rows = np.asarray(rows, dtype=np.int64)
        if not self.done[rows].all():
            missing = rows[~self.done[rows]][:5].tolist()
            raise RuntimeError(f"{self.path}: rows {missing} are not encoded yet; call ensure() first")
        chunk = self._embeddings.array[rows]  # fancy indexing copies
        self._embeddings.release()
        out = torch.from_numpy(chunk)
        if torch.device(device).type == "cuda":
            out = out.pin_memory()
        return out.to(device, non_blocking=True).float()

    def label(self, row: int) -> np.ndarray:
        """uint8 (H, W) label of cache row ``row``."""
        if self._labels is not None:
            if not self.done[row]:
                raise RuntimeError(f"{self.path}: row {row} is not built yet; call ensure() first")
            label = np.array(self._labels.array[row])
            self._labels.release()
            return label
        return self.store.label(self.sources[row][0])

    def organs(self, row: int) -> dict[int, int]:
        """{organ label: pixel count} on cache row ``row``."""
        if row not in self._organs:
            if self.kind == "base":
                self._organs[row] = self.store.records[self.sources[row][0]].organs
            else:
                present, counts = np.unique(self.label(row), return_counts=True)
                self._organs[row] = {int(o): int(n) for o, n in zip(present, counts) if o > 0}
        return self._organs[row]

    def samples(self, rows: Sequence[int]) -> list[tuple[int, int]]:
        """(cache row, organ label) for every organ on each of ``rows``."""
        return [(r, o) for r in rows for o in sorted(self.organs(r))]

    def store_index(self, row: int) -> int:
        return self.sources[row][0]

    def view_id(self, row: int) -> int:
        return self.sources[row][1]
