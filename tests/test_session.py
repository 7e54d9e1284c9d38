"""utils.scaffold.session.open_session: the store / device / seed opening the baselines use, without a SAM
model or an embedding cache, and its user errors (through the error boundary every script runs under)."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from synthetic import write_rawdata

from utils.data.slice_store import build_store
from utils.scaffold.boundary import run_script
from utils.scaffold.config import new_parser
from utils.scaffold.flags import add_data_args, add_run_args
from utils.scaffold.session import Session, open_session


def baseline_args(*argv):
    parser = new_parser(None)
    add_data_args(parser)
    add_run_args(parser)
    return parser.parse_args(list(argv))


def test_opens_store_and_device_seeded_without_a_model(tmp_path, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    store_path, _ = build_store(write_rawdata(tmp_path / "btcv"), tmp_path / "slices", progress=False)
    args = baseline_args("--slices", str(tmp_path / "slices"), "--device", "cpu", "--seed", "7", "--no-progress")
    session = open_session(args)
    assert isinstance(session, Session) and set(vars(session)) == {"store", "device"}
    assert session.store.path == store_path and session.device == torch.device("cpu")
    assert os.environ["TQDM_DISABLE"] == "1"
    # seeded as utils.core.seeding.seed_everything(7): random, numpy and torch
    draws = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    assert draws == (random.random(), np.random.rand(), torch.rand(1).item())
    assert not hasattr(args, "encode_batch")  # nothing of the SAM opening ran


def test_a_missing_store_is_one_error_line_and_exit_1(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SAM_BTCV_DEBUG", raising=False)
    missing = tmp_path / "nothing"
    code = run_script(lambda: open_session(baseline_args("--slices", str(missing), "--device", "cpu")) and 0)
    assert code == 1
    err = capsys.readouterr().err
    assert "error: " in err and str(missing) in err and "preprocess_slices.py" in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_an_unavailable_device_is_one_error_line_and_exit_1(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SAM_BTCV_DEBUG", raising=False)
    build_store(write_rawdata(tmp_path / "btcv"), tmp_path / "slices", progress=False)
    code = run_script(lambda: open_session(baseline_args("--slices", str(tmp_path / "slices"), "--device", "cuda")) and 0)
    assert code == 1 and "--device cuda" in capsys.readouterr().err
