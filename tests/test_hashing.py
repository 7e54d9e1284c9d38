"""utils.core.hashing, and every key and digest made with it, pinned to the values the suite's three
hashing copies (models.file_sha256, slice_store._file_digest / store_key, runs.run_key,
storage.signature_key, the cache's input probe) gave before they were folded into one module.

A changed value here means every run folder, embedding cache or slice store made before would be
orphaned: change the pin only together with a format version.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from utils.core.hashing import file_sha256, files_digest, json_key, short_digest
from utils.data.dataset import CaseFiles
from utils.data.slice_store import store_key
from utils.embeddings.storage import signature_key
from utils.scaffold.runs import run_key

# Computed at commit 2b6f3e0 with the functions of that tree (utils/models/sam.py file_sha256,
# utils/data/slice_store.py _file_digest and store_key, utils/scaffold/runs.py run_key,
# utils/embeddings/storage.py signature_key, utils/embeddings/cache.py input_probe's expression).
FILE_PINS = {
    "small": "c08addd584ae58fb9fbc68a5170fd1196bea4feac676c92dd0570caa697f3635",
    "big": "9043deea3ccc2a4eff11f1b22f37c5e547113b703e7b0b121c5c7682346aaaa6",
    "empty": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
}
IDENTITY = {"task": "baseline", "arch": "unet", "store_key": "55fffa6fa2745ce0", "seed": 0, "lr": 0.001,
            "channels": [4, 8, 16], "path": Path("/x/y"), "none": None, "nested": {"b": 2, "a": 1}}
SIGNATURE = {"model": "lite_medsam", "store_key": "55fffa6fa2745ce0", "shape": [256, 64, 64], "dtype": "float16",
             "a": 1.5, "z": True}


@pytest.fixture
def files(tmp_path):
    contents = {
        "small": b"sam-btcv\n" * 1000 + bytes(range(256)),
        # over a 4 MiB read block, so the blockwise reading is exercised
        "big": np.random.default_rng(0).integers(0, 256, 5 * (1 << 20) + 123, dtype=np.uint8).tobytes(),
        "empty": b"",
    }
    paths = {}
    for name, data in contents.items():
        paths[name] = tmp_path / f"{name}.bin"
        paths[name].write_bytes(data)
    return paths


def test_file_sha256_matches_the_pinned_digests_and_hashlib(files):
    for name, path in files.items():
        assert file_sha256(path) == FILE_PINS[name], name
        assert file_sha256(str(path)) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_run_key_is_pinned_and_ignores_field_order():
    assert run_key(IDENTITY) == "b2a88f7c7dcc"
    assert run_key(dict(reversed(list(IDENTITY.items())))) == "b2a88f7c7dcc"
    assert run_key({**IDENTITY, "seed": 1}) != "b2a88f7c7dcc"


def test_signature_key_is_pinned():
    assert signature_key(SIGNATURE) == "4cd3bc9d772ed720"
    assert signature_key({**SIGNATURE, "dtype": "float32"}) != "4cd3bc9d772ed720"


def test_store_key_is_pinned():
    cases = [CaseFiles("0001", Path("/d/img0001.nii.gz"), Path("/d/label0001.nii.gz"), "train"),
             CaseFiles("0035", Path("/d/img0035.nii.gz"), Path("/d/label0035.nii.gz"), "val")]
    digests = {"/d/img0001.nii.gz": "a" * 64, "/d/label0001.nii.gz": "b" * 64, "/d/img0035.nii.gz": "c" * 64,
               "/d/label0035.nii.gz": "d" * 64}
    settings = {"format_version": 1, "window_hu": [-175.0, 250.0], "slice_filter": "x", "slice_margin": 2}
    assert store_key(cases, digests, settings) == "209068f503f9f062"
    # the settings' order does not matter, the cases' does (it is the store's row order)
    assert store_key(cases, digests, dict(reversed(list(settings.items())))) == "209068f503f9f062"
    assert store_key(cases[::-1], digests, settings) != "209068f503f9f062"


def test_the_cache_input_probe_digest_is_pinned():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert short_digest(x.tobytes(), 16) == "29e1889124dc651e"


def test_json_key_is_sorted_json_cut_to_length():
    record = {"b": [1, 2], "a": "x"}
    full = hashlib.sha256(b'{"a": "x", "b": [1, 2]}').hexdigest()
    for length in (1, 12, 16, 64):
        assert json_key(record, length) == full[:length]
    assert json_key({"p": Path("/a")}, 16) == json_key({"p": "/a"}, 16)  # non-JSON values by their str
    assert short_digest("é", 64) == hashlib.sha256("é".encode()).hexdigest()
    for bad in (0, 65):
        with pytest.raises(ValueError):
            short_digest(b"", bad)


def test_files_digest_sees_every_file_its_name_and_its_order(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("x = 1\n")
    b.write_text("y = 2\n")
    both = files_digest([a, b])
    assert len(both) == 64 and files_digest([a, b], 16) == both[:16]
    assert files_digest([b, a]) != both
    assert files_digest([a]) != both
    b.write_text("y = 3\n")
    assert files_digest([a, b]) != both
    c = tmp_path / "c.py"
    c.write_text("y = 2\n")
    b.write_text("y = 2\n")
    assert files_digest([a, b]) == both and files_digest([a, c]) != both  # a renamed file counts as a change
    # name and size are framed, so moving bytes across a file boundary changes the digest
    a.write_text("x = 1\ny")
    b.write_text(" = 2\n")
    assert files_digest([a, b]) != both
