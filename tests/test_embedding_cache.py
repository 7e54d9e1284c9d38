import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import write_rawdata

from utils.data.augmentation import AugmentSpec
from utils.data.slice_store import SliceStore, build_store
from utils.embeddings.cache import EmbeddingCache
from utils.embeddings.storage import CacheError
from utils.models.sam import load_model


class CountingEncoder(torch.nn.Module):
    """A cheap stand-in encoder that counts the images it sees (the real ones are tested elsewhere)."""

    def __init__(self):
        super().__init__()
        self.images = 0
        self.img_size = 256

    def forward(self, x):
        self.images += x.shape[0]
        pooled = torch.nn.functional.avg_pool2d(x.mean(1, keepdim=True), 4)
        return pooled.expand(-1, 256, -1, -1) * torch.linspace(0, 1, 256)[None, :, None, None]


@pytest.fixture
def setup(tmp_path):
    root = write_rawdata(tmp_path / "btcv", case_ids=(1, 2, 35), shape=(48, 40, 5))
    store = SliceStore(build_store(root, tmp_path / "slices", progress=False)[0])
    model = load_model("lite_medsam")
    model.sam.image_encoder = CountingEncoder()
    return model, store, tmp_path / "cache"


def test_second_run_does_no_encoder_work(setup):
    model, store, root = setup
    cache = EmbeddingCache(model, store, root=root)
    assert cache.ensure(progress=False) == len(store)
    calls = model.sam.image_encoder.images
    again = EmbeddingCache(model, store, root=root)
    assert again.path == cache.path
    assert again.ensure(progress=False) == 0
    assert model.sam.image_encoder.images == calls
    expected = model.sam.image_encoder(model.prepare_image(store.load(2)[0])[None])[0]
    assert torch.allclose(again.embeddings([2])[0], expected.half().float())


def test_changed_key_reencodes(setup):
    model, store, root = setup
    EmbeddingCache(model, store, root=root).ensure(progress=False)
    before = model.sam.image_encoder.images
    other = EmbeddingCache(model, store, root=root, encoder_precision="bf16")
    assert other.path != EmbeddingCache(model, store, root=root).path
    assert other.ensure(progress=False) == len(store)
    model.checkpoint_sha256 = "another checkpoint"
    third = EmbeddingCache(model, store, root=root)
    assert third.ensure(progress=False) == len(store)
    assert model.sam.image_encoder.images == before + 2 * len(store)


def test_changed_preprocessing_code_means_a_new_cache(setup, monkeypatch):
    # The described preprocessing stays the same, but the code now does something else: never read
    # the old embeddings.
    model, store, root = setup
    cache = EmbeddingCache(model, store, root=root)
    cache.ensure(progress=False)
    original = type(model).prepare_image
    monkeypatch.setattr(type(model), "prepare_image", lambda self, image: original(self, image) * 0.5)
    changed = EmbeddingCache(model, store, root=root)
    assert changed.signature["preprocessing"] == cache.signature["preprocessing"]
    assert changed.path != cache.path
    assert changed.ensure(progress=False) == len(store)


@pytest.mark.parametrize("name, damage, message", [
    ("embeddings.npy", b"truncated", r"embeddings\.npy: not a readable cache array"),
    ("embeddings.npy", None, r"embeddings\.npy: not a readable cache array"),
    ("done.npy", b"\x93NUMPY garbage", r"done\.npy: unreadable"),
    ("done.npy", None, r"done\.npy: unreadable"),
    ("signature.json", b"{not json", r"signature\.json: unreadable"),
    ("signature.json", None, r"signature\.json: missing"),
])
def test_damaged_or_missing_cache_file_names_the_file_and_the_fix(setup, name, damage, message):
    model, store, root = setup
    cache = EmbeddingCache(model, store, root=root)
    cache.ensure(rows=[0], progress=False)
    if damage is None:
        (cache.path / name).unlink()
    else:
        (cache.path / name).write_bytes(damage)
    with pytest.raises(CacheError, match=message + r".*delete the folder"):
        EmbeddingCache(model, store, root=root)
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]  # nothing half-built left behind


def test_wrong_shape_in_a_cache_file_is_named(setup):
    model, store, root = setup
    cache = EmbeddingCache(model, store, root=root)
    np.save(cache.path / "done.npy", np.zeros(len(store) + 1, dtype=bool))
    with pytest.raises(CacheError, match=r"done\.npy: holds bool \(\d+,\), expected bool"):
        EmbeddingCache(model, store, root=root)


def _fill_cache(args):
    root, store_path, rows = args
    import torch as _torch

    from utils.data.slice_store import SliceStore as _Store
    from utils.models.sam import load_model as _load

    _torch.set_num_threads(1)
    model = _load("lite_medsam")
    model.sam.image_encoder = CountingEncoder()
    cache = EmbeddingCache(model, _Store(store_path), root=root)
    cache.ensure(rows=rows, batch_size=1, progress=False)
    return str(cache.path), cache.storage.done.tolist()


def test_two_processes_creating_one_cache_both_succeed_and_agree(setup):
    import multiprocessing

    model, store, root = setup
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map(_fill_cache, [(root, store.path, None), (root, store.path, None)])
    paths = {p for p, _ in results}
    assert len(paths) == 1 and all(all(done) for _, done in results)
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".")]
    cache = EmbeddingCache(model, store, root=root)
    assert cache.storage.done.all()
    expected = model.sam.image_encoder(model.prepare_image(store.load(1)[0])[None])[0]
    assert torch.allclose(cache.embeddings([1])[0], expected.half().float())


def test_rows_written_by_another_process_are_not_unmarked(setup):
    # Two openers of one cache fill different rows; neither's done-marker write erases the other's rows.
    model, store, root = setup
    first = EmbeddingCache(model, store, root=root)
    second = EmbeddingCache(model, store, root=root)
    first.ensure(rows=[0, 1], progress=False)
    second.ensure(rows=[2], progress=False)
    assert EmbeddingCache(model, store, root=root).storage.done[[0, 1, 2]].all()
    assert second.ensure(rows=[0, 1, 2], progress=False) == 0  # it sees the first opener's rows


def test_interrupted_run_resumes_where_it_stopped(setup):
    model, store, root = setup
    cache = EmbeddingCache(model, store, root=root)
    cache.ensure(rows=[0, 1, 2], batch_size=2, progress=False)
    resumed = EmbeddingCache(model, store, root=root)
    assert resumed.storage.done[:3].all() and not resumed.storage.done[3:].any()
    assert resumed.ensure(progress=False) == len(store) - 3


def test_signature_mismatch_is_refused(setup):
    model, store, root = setup
    cache = EmbeddingCache(model, store, root=root)
    (cache.path / "signature.json").write_text('{"model": "something else"}')
    with pytest.raises(CacheError, match="signature does not match"):
        EmbeddingCache(model, store, root=root)


def test_unencoded_rows_are_never_served(setup):
    model, store, root = setup
    cache = EmbeddingCache(model, store, root=root)
    with pytest.raises(CacheError, match="not encoded"):
        cache.embeddings([0])


def test_augmented_views_are_deterministic_and_labels_follow_images(setup):
    model, store, root = setup
    spec = AugmentSpec(views=2, seed=3)
    cache = EmbeddingCache(model, store, augment=spec, root=root)
    assert len(cache) == 2 * len(store.indices("train"))
    cache.ensure(progress=False)
    again = EmbeddingCache(model, store, augment=spec, root=root)
    for row in range(len(cache)):
        image, label = again.view(row)
        assert np.array_equal(label, cache.label(row))
        # organs move with the image: the labelled pixels are the bright ones
        if label.any():
            assert image[label > 0].mean() > image[label == 0].mean()
    first = cache.view(0)[1]
    second = cache.view(1)[1]
    assert not np.array_equal(first, second)  # two different views of one slice


def _resident_kib(path) -> int:
    """Resident KiB of this process's mappings of ``path``, from /proc/self/smaps."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        first = line.split()[0] if line.strip() else ""
        if "-" in first and not first.endswith(":"):
            inside = line.rstrip().endswith(str(path))
        elif inside and first == "Rss:":
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux /proc/self/smaps")
def test_reading_every_row_leaves_no_cache_pages_resident(setup):
    model, store, root = setup
    cache = EmbeddingCache(model, store, root=root)
    cache.ensure(progress=False)
    file = cache.path / "embeddings.npy"
    rows = list(range(len(cache)))
    embeddings = cache.embeddings(rows)
    assert embeddings.shape == (len(rows), 256, 64, 64)
    # Peak memory must not grow with the store: the mapped pages are dropped after each read.
    assert _resident_kib(file) == 0
    # ...whereas np.load's memory map keeps every page it touched (this is what the release prevents).
    plain = np.load(file, mmap_mode="r")
    assert np.array_equal(np.asarray(plain[rows]), embeddings.numpy().astype(np.float16))
    assert _resident_kib(file) >= file.stat().st_size // 1024 // 2


class _FixedStore:
    """What a cache's signature reads of a store, with fixed contents (no files: the key cannot drift with them)."""

    key = "0123456789abcdef"
    path = Path("fixed-store")

    def __len__(self):
        return 3

    def indices(self, split):
        return {"train": [0, 1], "val": [2], "all": [0, 1, 2]}[split]

    def label(self, index):
        label = np.zeros((40, 48), np.uint8)
        label[10:20, 12:30] = 1 + index
        return label

    def load(self, index):
        image = np.linspace(0, 1, 40 * 48, dtype=np.float32).reshape(40, 48) ** (1 + index)
        return image, self.label(index)


@pytest.mark.parametrize("augment, key", [
    (None, "36967a4a33036412"),
    (AugmentSpec(views=2, seed=3), "cf5267a1282ea016"),
])
def test_signature_and_key_of_a_known_configuration_never_change(tmp_path, augment, key):
    """Pinned at commit 2b6f3e0 (before the cache was split into signature / encoding / reading): a changed
    field, value or key function would silently orphan every cache already built."""
    from dist_helpers import StubModel

    from utils.embeddings.storage import signature_key

    cache = EmbeddingCache(StubModel(), _FixedStore(), augment, root=tmp_path, encoder_precision="bf16")
    assert cache.signature == {
        "format_version": 3, "model": "stub", "checkpoint_sha256": "0" * 64, "store_key": "0123456789abcdef",
        "preprocessing": "stub: image repeated to 3 channels, 64x64 nearest", "input_probe": "30026eea66b1a2be",
        "encoder_precision": "bf16", "dtype": "float16", "kind": "aug" if augment else "base",
        "augment": dataclasses.asdict(augment) if augment else None, "rows": 4 if augment else 3}
    assert signature_key(cache.signature) == key
    assert cache.path == tmp_path / f"stub-{cache.signature['kind']}-{key}"
    assert json.loads((cache.path / "signature.json").read_text()) == cache.signature


def test_litemedsam_embeddings_do_not_depend_on_the_encoder_batch():
    """The CPU default encodes one slice per call (faster here than 8); a cache filled at another --encode-batch
    must hold the same embeddings, bit for bit, or caches filled on different machines would disagree."""
    from utils.embeddings.encoding import encode_images

    model = load_model("lite_medsam")
    images = torch.rand(3, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        together = encode_images(model, images, "fp32")
        one_by_one = torch.cat([encode_images(model, images[i : i + 1], "fp32") for i in range(3)])
    assert torch.equal(together, one_by_one)
