"""What a cache's embeddings depend on: the signature that names and guards its storage folder.

The signature covers the model, its checkpoint digest, the slice-store key, the preprocessing (described,
and :func:`input_probe`, a digest of what it makes of the first slice), the encoder precision, the
augmentation and the format version. Its key (:func:`utils.embeddings.storage.signature_key`) names the
folder, so a changed input means a new folder, never a stale read.
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np

from utils.core.hashing import short_digest
from utils.data.samples import SampleIndex
from utils.data.slice_store import SliceStore
from utils.models.sam import SamModel

# 2: "precision" became "encoder_precision"; 3: "input_probe" (a digest of the preprocessed first slice)
CACHE_FORMAT_VERSION = 3


def input_probe(model: SamModel, store: SliceStore) -> str:
    """Digest of the encoder input the model's preprocessing makes from the store's first slice.

    ``preprocessing`` in the signature only describes the code; this catches a change in what the code
    actually does (a new resize or normalisation) that its description did not follow. It costs one
    resize, and no encoder pass.
    """
    if len(store) == 0:
        return "empty"
    x = model.prepare_image(store.load(0)[0]).cpu().numpy().astype(np.float32)
    return short_digest(x.tobytes(), 16)


def cache_signature(model: SamModel, index: SampleIndex, encoder_precision: str) -> dict:
    """The signature of ``model``'s embeddings of ``index``'s rows (its store, or that store's augmented
    views) encoded at ``encoder_precision``; stored as signature.json and checked on every open."""
    store, augment = index.store, index.augment
    return {
        "format_version": CACHE_FORMAT_VERSION,
        "model": model.name,
        "checkpoint_sha256": model.checkpoint_sha256,
        "store_key": store.key,
        "preprocessing": model.preprocessing,
        "input_probe": input_probe(model, store),
        "encoder_precision": encoder_precision,
        "dtype": "float16",
        "kind": index.kind,
        "augment": asdict(augment) if augment else None,
        "rows": len(index),
    }
