"""utils.eval.bootstrap: volume-level resampling, checked against hand-written loops over summarise_dice."""
import time

import numpy as np
import pytest

from utils.eval.bootstrap import (
    bootstrap_accuracy,
    bootstrap_difference,
    bootstrap_mdice,
    format_interval,
    triples,
    volume_weights,
)
from utils.eval.dice import summarise_dice


def random_records(n_cases=6, per_case=30, seed=0):
    """(case, organ, dice) with organs missing from some cases, cases of different sizes."""
    rng = np.random.default_rng(seed)
    records = []
    for c in range(n_cases):
        for _ in range(per_case + 5 * c):
            organ = int(rng.integers(1, 14 if c % 2 else 8))
            records.append((f"{35 + c:04d}", organ, float(rng.beta(5, 2))))
    return records


def hand_interval(records, resamples, seed, by="volume", stat="mdice"):
    """The bootstrap written out one resample at a time, with summarise_dice (or a plain mean)."""
    units = sorted({str(r[0]) for r in records}) if by == "volume" else list(range(len(records)))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(units), size=(resamples, len(units)))
    values = []
    for draw in draws:
        if by == "volume":
            sample = [r for k in draw for r in records if str(r[0]) == units[k]]
        else:
            sample = [records[k] for k in draw]
        if stat == "mdice":
            values.append(summarise_dice((o, d) for _, o, d in sample)["mDice"])
        else:
            values.append(np.mean([v for _, _, v in sample]))
    return np.quantile(values, [0.025, 0.975])


def test_identical_volumes_collapse_the_interval_to_the_mean():
    one_volume = [(1, 0.8), (1, 0.6), (6, 0.9), (8, 0.3)]
    records = [(case, organ, dice) for case in ("a", "b", "c", "d") for organ, dice in one_volume]
    ci = bootstrap_mdice(records)
    assert ci["mean"] == pytest.approx((0.7 + 0.9 + 0.3) / 3)
    assert ci["low"] == pytest.approx(ci["mean"], abs=1e-12)
    assert ci["high"] == pytest.approx(ci["mean"], abs=1e-12)
    assert (ci["unit"], ci["resamples"], ci["seed"], ci["n_volumes"], ci["n_samples"]) == ("volume", 1000, 0, 4, 16)
    acc = bootstrap_accuracy([(case, 1, k % 2) for case in "abc" for k in range(4)])
    assert acc["low"] == pytest.approx(0.5) and acc["high"] == pytest.approx(0.5) and acc["mean"] == 0.5


def test_point_estimate_is_summarise_dices_mdice():
    records = random_records()
    ci = bootstrap_mdice(records)
    assert ci["mean"] == summarise_dice((o, d) for _, o, d in records)["mDice"]
    assert ci["low"] < ci["mean"] < ci["high"]
    task_records = [{"case": c, "z": 0, "row": k, "organ": o, "dice": d} for k, (c, o, d) in enumerate(records)]
    assert bootstrap_mdice(triples(task_records)) == ci


def test_seeded():
    records = random_records()
    assert bootstrap_mdice(records, seed=3) == bootstrap_mdice(records, seed=3)
    assert bootstrap_mdice(records, seed=3)["low"] != bootstrap_mdice(records, seed=4)["low"]
    assert bootstrap_mdice(records, seed=4)["seed"] == 4


def test_matches_a_hand_written_loop_over_volumes():
    records = random_records(n_cases=5, per_case=6, seed=2)
    ci = bootstrap_mdice(records, resamples=200, seed=7)
    low, high = hand_interval(records, 200, 7)
    assert (ci["low"], ci["high"]) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    acc_records = [(c, o, float(d > 0.7)) for c, o, d in records]
    acc = bootstrap_accuracy(acc_records, resamples=200, seed=7)
    low, high = hand_interval(acc_records, 200, 7, stat="accuracy")
    assert (acc["low"], acc["high"]) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))


def test_resamples_volumes_not_slices():
    # One volume of 20 good samples, four of one poor sample each: by volume the big one is 1 unit in 5
    # and its presence swings the mean; by sample the 24 draws average out and the interval is narrow.
    records = [("big", 1, 0.9)] * 20 + [(f"small{k}", 1, d) for k, d in enumerate([0.1, 0.2, 0.3, 0.4])]
    ci = bootstrap_mdice(records, resamples=300, seed=1)
    by_volume = hand_interval(records, 300, 1, by="volume")
    by_slice = hand_interval(records, 300, 1, by="slice")
    assert (ci["low"], ci["high"]) == (pytest.approx(by_volume[0], abs=1e-12), pytest.approx(by_volume[1], abs=1e-12))
    assert ci["high"] - ci["low"] > 2 * (by_slice[1] - by_slice[0])
    # exact enumeration of the two-volume case: each resample is {A, A}, {A, B} or {B, B}
    two = [("A", 1, 1.0), ("A", 1, 1.0), ("A", 1, 1.0), ("B", 1, 0.0)]
    values = {bootstrap_mdice(two, resamples=1, seed=s)["low"] for s in range(40)}
    assert values == {1.0, 0.75, 0.0}  # never the by-sample values 0.25 or 0.5


def test_volume_weights_draw_whole_volumes():
    w = volume_weights(6, resamples=50, seed=0)
    assert w.shape == (50, 6) and (w.sum(1) == 6).all()
    draws = np.random.default_rng(0).integers(0, 6, size=(50, 6))
    np.testing.assert_array_equal(w[0], np.bincount(draws[0], minlength=6))


def test_paired_difference_flags_intervals_that_exclude_zero():
    base = random_records(n_cases=6, per_case=10, seed=5)
    better = [(c, o, d + 0.05) for c, o, d in base]
    up = bootstrap_difference(better, base)
    assert up["mean"] == pytest.approx(0.05) and up["low"] == pytest.approx(0.05) and up["excludes_zero"]
    down = bootstrap_difference(base, better)
    assert down["high"] < 0 and down["excludes_zero"]
    # half the volumes gain, half lose as much: no clear difference
    shift = {c: (0.1 if k % 2 else -0.1) for k, c in enumerate(sorted({r[0] for r in base}))}
    mixed = [(c, o, d + shift[c]) for c, o, d in base]
    tie = bootstrap_difference(mixed, base)
    assert tie["low"] < 0 < tie["high"] and not tie["excludes_zero"]
    acc = bootstrap_difference([(c, o, 1.0) for c, o, _ in base], [(c, o, 0.0) for c, o, _ in base], "accuracy")
    assert acc["mean"] == 1.0 and acc["excludes_zero"]
    assert format_interval(up) == "5.0 [5.0, 5.0]*"
    with pytest.raises(ValueError, match="differ at sample 0"):
        bootstrap_difference(base[1:] + base[:1], base)


def test_a_thousand_resamples_of_a_thousand_records_is_fast():
    records = random_records(n_cases=6, per_case=160)
    assert len(records) > 1000
    start = time.perf_counter()
    bootstrap_mdice(records)
    bootstrap_difference(records, records[::-1][::-1])
    assert time.perf_counter() - start < 1.0
