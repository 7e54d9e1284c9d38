"""Benchmarks: encoder and decoder throughput, Task 1 against the naive SamPredictor loop, peak memory.

    python benchmarks/run.py                              # all sections, CUDA when available, else CPU
    python benchmarks/run.py --sections task1,memory --device cpu
    make bench                                            # the same, in the project's .venv

Measures on the machine it runs on and writes results/bench/bench.json and results/bench/bench.md.
Sections:
  encoder  slices/s of the image encoder: lite_medsam (its real weights) and vit_b / vit_h with RANDOM
           weights (speed does not depend on the values; no SAM checkpoint is needed), fp32 and the
           fast path (--precision bf16 on a CPU; bf16 and fp16 on a GPU).
  decoder  prompts/s at inference (batched prompts, each paired with its own cached embedding) and
           samples/s in Task 2 training (forward + Dice loss + backward + SGD step), fp32 and fast.
           SAM's mask decoder is the same module for lite_medsam and vit_b/l/h.
  training Task 2 and Task 3 training steps, exact path vs fast path (utils/fastpath.py) interleaved in
           this process, wall and CPU (user+sys) time: LiteMedSAM on the phantom (160x160) and a
           ViT-B-shaped model (random weights) on 512x512 phantom slices with random embeddings, at
           batch 16 and 64; torch.compile's first-call cost and steady rate; and the paper preset's
           estimated wall time on BTCV from the measured rate (TRAINING_ESTIMATE states the sample count).
  task1    Task 1 end to end (all five prompts) on a fixed phantom store, by the suite (embedding
           cache + batched decoding) against the naive study: SamPredictor.set_image + predict once
           per (slice, organ, prompt). Both run in this process on the same store; their Dice
           must agree, and the speed ratio is reported.
  memory   peak resident memory (VmHWM, Linux) of Task 1 and Task 2 on two phantom
           stores of 60 and 120 slices: the cache is memory-mapped and its pages are released after
           every read, so the peak must not grow with the store.
On 2 CPU cores all sections take about 12 minutes (the first run also encodes the memory stores).
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SECTIONS = ("encoder", "decoder", "training", "task1", "memory")
# (batch, warm-up calls, timed calls) per model: a CPU gets one vit_h image (about a minute each).
ENCODER_PLAN = {
    "cpu": {"lite_medsam": (4, 1, 3), "vit_b": (1, 0, 1), "vit_h": (1, 0, 1)},
    "cuda": {"lite_medsam": (32, 2, 10), "vit_b": (8, 2, 5), "vit_h": (4, 2, 5)},
}
BENCH_DATA = ROOT / "data" / "bench"
# Task 1's fixed phantom store: on a CPU case 1 x 2 slices (~20 organs x 5 prompts, the naive loop
# takes ~80 s); a GPU gets cases 1-4 x 2 slices, so the timings are not all start-up overhead.
TASK1_PHANTOM = {"cpu": {"volumes": 1, "slices": 2}, "cuda": {"volumes": 4, "slices": 2}}
# 60 and 120 slices (the phantom needs >= 2 slices per volume, and 30 volumes for a validation split).
MEMORY_STORES = {"small": {"volumes": 30, "slices": 2}, "large": {"volumes": 30, "slices": 4}}


def parse_args(argv=None) -> argparse.Namespace:
    from utils.scaffold.config import new_parser

    parser = new_parser(__doc__)
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda")
    parser.add_argument("--encoders", default="lite_medsam,vit_b,vit_h", help="models for the encoder section")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench", help="where bench.json/bench.md go")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--compile-on-cpu", action="store_true",
                        help="training section: also time torch.compile on a CPU (minutes of compiling)")
    return parser.parse_args(argv)


def fast_precisions(device: torch.device) -> list[str]:
    return ["bf16", "fp16"] if device.type == "cuda" else ["bf16"]


def task1_variants(device: torch.device) -> list[tuple[str, str]]:
    """(--precision, --encoder-precision) pairs: fp32, then the fast paths worth having on ``device``."""
    if device.type == "cuda":
        return [("fp32", "fp32"), ("bf16", "bf16"), ("fp16", "fp16")]
    return [("fp32", "fp32"), ("bf16", "fp32"), ("bf16", "bf16")]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, warmup: int, repeats: int) -> float:
    """Mean seconds of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats


# ------------------------------------------------------------------------------------------ encoder
def bench_encoder(names: list[str], device: torch.device) -> list[dict]:
    from utils.core.precision import autocast
    from utils.models.sam import load_model

    rows = []
    for name in names:
        batch, warmup, repeats = ENCODER_PLAN[device.type][name]
        torch.manual_seed(0)
        model = load_model(name, device=device, random_init=name != "lite_medsam")
        x = torch.rand(batch, 3, model.input_size, model.input_size, device=device)
        for precision in ["fp32", *fast_precisions(device)]:
            with torch.inference_mode(), autocast(device, precision):
                seconds = timed(lambda: model.sam.image_encoder(x), device, warmup, repeats)
            rows.append({"model": name, "weights": "real" if name == "lite_medsam" else "random (timing only)",
                         "precision": precision, "batch": batch, "input": model.input_size,
                         "slices_per_s": round(batch / seconds, 3), "s_per_slice": round(seconds / batch, 4)})
            print(f"  encoder {name:<12} {precision}: {batch / seconds:8.2f} slices/s", flush=True)
        del model, x
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# ------------------------------------------------------------------------------------------ stores
def phantom_store(name: str, volumes: int, slices: int, size: int = 160) -> Path:
    """A phantom slice store under data/bench/ (built once, reused: stores and caches are keyed)."""
    from utils.data.phantom import PhantomConfig, write_phantom_dataset
    from utils.data.slice_store import build_store

    mm = 2.4 * 160 / size  # the same body in more pixels
    config = PhantomConfig(shape=(size, size, slices), spacing=(mm, mm, 90.0 / slices), n_volumes=volumes)
    raw = write_phantom_dataset(BENCH_DATA / f"phantom-{name}", config, progress=False)
    store_path, _ = build_store(raw.parent, BENCH_DATA / f"slices-{name}", progress=False)
    return store_path


# ------------------------------------------------------------------------------------------ training
# The paper preset on real BTCV, for the estimate: BTCV's 30 labelled CTs hold 3,779 axial slices; the
# training split (80 %) has ~2,400 organ-bearing slices with ~4.2 of the 13 organs each, ~10,000
# (slice, organ) samples; Task 2 adds 2 augmented views per slice (30,000 samples per epoch) and trains
# 5 prompt types for 50 epochs (7.5M sample-steps); Task 3 trains one prompt type on the 10,000 unaugmented
# samples for 50 epochs (0.5M). Validation and encoding are not included.
TRAINING_ESTIMATE = {"task2_sample_steps": 30_000 * 50 * 5, "task3_sample_steps": 10_000 * 50}
# (steps per timed round, rounds) on a CPU / GPU; exact and fast alternate round by round.
TRAINING_PLAN = {"cpu": (1, 3), "cuda": (10, 5)}


class RandomEmbeddings:
    """An embedding cache stand-in for speed: a real store's labels, seeded random embeddings (float16
    as stored), so a ViT-B-shaped run needs no ViT-B encoder pass (11.6 s per slice on this CPU)."""

    def __init__(self, model, store):
        from utils.embeddings.samples import SampleIndex

        self.model, self.store = model, store
        self.index = SampleIndex(store, None)
        g = torch.Generator().manual_seed(0)
        self.table = torch.randn(len(self.index), 256, 64, 64, generator=g).half()
        self.storage = self  # ResidentEmbeddings reads storage.read(rows)

    def read(self, rows):
        return self.table[torch.as_tensor(np.asarray(rows))].numpy()

    def __len__(self):
        return len(self.index)

    def label(self, row):
        return self.index.label(row)

    def store_index(self, row):
        return self.index.store_index(row)

    def view_id(self, row):
        return self.index.view_id(row)

    def samples(self, rows):
        return self.index.samples(rows)

    def embeddings(self, rows, device="cpu"):
        out = self.table[torch.as_tensor(np.asarray(rows))]
        if torch.device(device).type == "cuda":
            out = out.pin_memory()
        return out.to(device, non_blocking=True).float()


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def training_variants(device: torch.device) -> dict:
    """name -> fast-path flags (train_precision, compile, prefetch): the exact path and the device's fast path."""
    from utils.train.fastpath import resolve

    return {"exact": resolve(device, "fp32"),
            "fast": resolve(device, "fp32", "auto", "off", "auto", "auto", cache_bytes=0),
            "fast+compile": resolve(device, "fp32", "auto", "on", "auto", "auto", cache_bytes=0)}


def bench_training(device: torch.device, compile_on_cpu: bool = False) -> dict:
    """Task 2 / Task 3 training steps, exact vs fast path, interleaved; samples/s wall and per CPU second."""
    import copy

    from finetune_task2 import make_step
    from modified_classifier import ClassifyingMaskDecoder
    from utils.data.slice_store import SliceStore
    from utils.embeddings.cache import EmbeddingCache
    from utils.inference.classify import class_forward, class_inputs
    from utils.inference.decoding import predict_masks_paired
    from utils.models.sam import load_model
    from utils.train.fastpath import CompiledOrEager, ResidentEmbeddings, batches, grad_scaler
    from utils.train.loop import backward_step

    per_round, rounds = TRAINING_PLAN[device.type]
    variants = training_variants(device)
    if device.type == "cpu" and not compile_on_cpu:
        variants.pop("fast+compile")
    configs = []
    lite = load_model("lite_medsam", device=device)
    store = SliceStore(phantom_store(f"task1-{device.type}", **TASK1_PHANTOM[device.type]))
    lite_cache = EmbeddingCache(lite, store, root=BENCH_DATA / "cache")
    lite_cache.ensure(progress=False)
    configs.append(("lite_medsam, phantom 160x160 (real weights)", lite_cache))
    torch.manual_seed(0)
    vit_b = load_model("vit_b", device=device, random_init=True)
    store512 = SliceStore(phantom_store("train512", volumes=1, slices=2, size=512))
    configs.append(("vit_b-shaped (random weights), 512x512 slices", RandomEmbeddings(vit_b, store512)))

    rows = []
    for label, cache in configs:
        model = cache.model
        for p in model.sam.parameters():
            p.requires_grad_(False)
        samples = [(0, r, o) for r, o in cache.samples(range(len(cache)))]
        for batch_size in (16, 64):
            pool = (samples * (1 + (per_round * batch_size) // len(samples)))[: per_round * batch_size]
            order = np.arange(len(pool))
            for task in ("task2", "task3"):
                runners = {}
                for name, fast in variants.items():
                    torch.manual_seed(0)
                    resident = {0: ResidentEmbeddings(cache, device)} if fast.resident else None
                    if task == "task2":
                        module = torch.nn.ModuleDict({"prompt_encoder": copy.deepcopy(model.sam.prompt_encoder),
                                                      "mask_decoder": copy.deepcopy(model.sam.mask_decoder)})
                        module.requires_grad_(True)
                        optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
                        paired = CompiledOrEager(predict_masks_paired, fast.compile)
                        step = make_step([cache], "bound_box", 0, module, fast.train_precision, paired, resident)
                        prepare = step.prepare
                    else:
                        classifier = ClassifyingMaskDecoder(copy.deepcopy(model.sam.mask_decoder)).to(device)
                        classifier.freeze_for_task3()
                        optimizer = torch.optim.Adam(classifier.trainable_parameters(), lr=1e-4)
                        loss_fn = torch.nn.CrossEntropyLoss()
                        pe = model.sam.prompt_encoder
                        res = resident[0] if resident else None

                        def prepare(b, epoch, cache=cache, res=res):
                            return class_inputs(cache, [(r, o) for _, r, o in b], "one_central_point", 0, epoch, res)

                        def step(inputs, epoch, classifier=classifier, pe=pe, fast=fast, loss_fn=loss_fn):
                            logits, targets = class_forward(classifier, pe, inputs, fast.train_precision)
                            return type("R", (), {"loss": loss_fn(logits, targets)})
                    scaler = grad_scaler(fast, device)

                    def run_round(step=step, prepare=prepare, optimizer=optimizer, fast=fast, scaler=scaler):
                        for inputs in batches(pool, order, batch_size, 0, prepare, fast.prefetch):
                            optimizer.zero_grad(set_to_none=True)
                            backward_step(step(inputs, 0).loss, optimizer, scaler)

                    sync(device)
                    t0 = time.perf_counter()
                    run_round()  # warm-up (with compile: its compile time)
                    sync(device)
                    first = time.perf_counter() - t0
                    runners[name] = {"run": run_round, "wall": 0.0, "cpu": 0.0, "first_round_s": first,
                                     "note": paired.note if task == "task2" else "eager"}
                for _ in range(rounds):  # interleaved: exact, fast, exact, fast ...
                    for r in runners.values():
                        sync(device)
                        w, c = time.perf_counter(), cpu_seconds()
                        r["run"]()
                        sync(device)
                        r["wall"] += time.perf_counter() - w
                        r["cpu"] += cpu_seconds() - c
                n = rounds * len(pool)
                base = n / runners["exact"]["wall"]
                for name, r in runners.items():
                    row = {"config": label, "task": task, "batch": batch_size, "path": name,
                           "flags": variants[name].record(), "samples": n,
                           "samples_per_s": round(n / r["wall"], 2),
                           "samples_per_cpu_s": round(n / max(r["cpu"], 1e-9), 2),
                           "speedup": round(n / r["wall"] / base, 2), "first_round_s": round(r["first_round_s"], 1),
                           "compile": r["note"]}
                    rows.append(row)
                    print(f"  training {task} {label} batch {batch_size} {name}: {row['samples_per_s']:.1f} samples/s "
                          f"({row['samples_per_cpu_s']:.1f} per CPU s), {row['speedup']:.2f}x", flush=True)
    return {"rows": rows, "estimate": paper_estimate(rows, device)}


def paper_estimate(rows: list[dict], device: torch.device) -> dict:
    """Hours of training for the paper preset on BTCV (TRAINING_ESTIMATE) at the measured ViT-B-shaped rates."""
    out = {"assumed": TRAINING_ESTIMATE, "device": device.type}
    for path in sorted({r["path"] for r in rows}):
        rate = {t: max((r["samples_per_s"] for r in rows if r["path"] == path and r["task"] == t
                        and r["config"].startswith("vit_b")), default=None) for t in ("task2", "task3")}
        if None in rate.values():
            continue
        hours = (TRAINING_ESTIMATE["task2_sample_steps"] / rate["task2"]
                 + TRAINING_ESTIMATE["task3_sample_steps"] / rate["task3"]) / 3600
        out[path] = {"task2_samples_per_s": rate["task2"], "task3_samples_per_s": rate["task3"],
                     "hours": round(hours, 1)}
    return out


# ------------------------------------------------------------------------------------------ decoder
def bench_decoder(device: torch.device) -> list[dict]:
    import copy

    from finetune_task2 import make_step
    from utils.core.device import auto_batch
    from utils.data.slice_store import SliceStore
    from utils.embeddings.cache import EmbeddingCache
    from utils.eval.segmentation import evaluate_prompt
    from utils.models.sam import load_model

    model = load_model("lite_medsam", device=device)
    store = SliceStore(phantom_store(f"task1-{device.type}", **TASK1_PHANTOM[device.type]))
    rows = []
    for precision in ["fp32", *fast_precisions(device)]:
        cache = EmbeddingCache(model, store, root=BENCH_DATA / "cache")
        cache.ensure(progress=False)
        samples = cache.samples(range(len(cache)))
        batch = auto_batch(device, "decode")
        evaluate_prompt(cache, samples[:batch], "bound_box", batch_size=batch, precision=precision)  # warm-up
        sync(device)
        start = time.perf_counter()
        repeats = 3
        for _ in range(repeats):
            evaluate_prompt(cache, samples, "bound_box", batch_size=batch, precision=precision)
        sync(device)
        inference = repeats * len(samples) / (time.perf_counter() - start)

        for p in model.sam.parameters():
            p.requires_grad_(False)
        trainable = torch.nn.ModuleDict({"prompt_encoder": copy.deepcopy(model.sam.prompt_encoder),
                                         "mask_decoder": copy.deepcopy(model.sam.mask_decoder)})
        trainable.requires_grad_(True)
        optimizer = torch.optim.SGD(trainable.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        step = make_step([cache], "bound_box", 0, trainable, precision)
        train_batch = 16
        pool = [(0, r, o) for r, o in samples] * (1 + 2 * train_batch // len(samples))
        batches = [pool[:train_batch], pool[train_batch : 2 * train_batch]]

        def train_step(batch=batches):
            for b in batch:
                optimizer.zero_grad(set_to_none=True)
                step(b, 0).loss.backward()
                optimizer.step()

        seconds = timed(train_step, device, 1, 2)
        training = 2 * train_batch / seconds
        rows.append({"precision": precision, "inference_batch": batch, "inference_prompts_per_s": round(inference, 2),
                     "train_batch": train_batch, "train_samples_per_s": round(training, 2)})
        print(f"  decoder {precision}: {inference:8.1f} prompts/s inference, {training:6.1f} samples/s training",
              flush=True)
    return rows


# ------------------------------------------------------------------------------------------ task 1
def naive_task1(model, store, prompt_types, seed: int = 0, progress: bool = True) -> tuple[float, dict]:
    """The study as a first version writes it: SamPredictor.set_image + predict per (slice, organ, prompt)."""
    from segment_anything import SamPredictor
    from tqdm import tqdm

    from utils.eval.dice import dice_score
    from utils.inference.batches import prompt_for
    from utils.models.sam import to_uint8

    predictor = SamPredictor(model.sam)
    dice = {}
    work = [(i, o, p) for i in range(len(store)) for o in sorted(store.records[i].organs) for p in prompt_types]
    start = time.perf_counter()
    for index, organ, prompt_type in tqdm(work, desc="naive SamPredictor loop", unit="prompt", disable=not progress):
        image, label = store.load(index)
        mask = label == organ
        if model.name == "lite_medsam":  # LiteMedSAM's own preprocessing, handed over already transformed
            h, w = model.resized_size(image.shape)
            predictor.set_torch_image(model.prepare_image(image)[None, :, :h, :w].to(model.device), image.shape)
        else:
            predictor.set_image(np.repeat(to_uint8(image)[:, :, None], 3, axis=2))
        prompt = prompt_for(mask, prompt_type, seed, index, organ)  # the very prompt the suite draws
        if prompt.box is not None:
            masks, _, _ = predictor.predict(box=prompt.box, multimask_output=False)
        else:
            masks, _, _ = predictor.predict(point_coords=prompt.points, point_labels=prompt.labels,
                                            multimask_output=False)
        dice[(index, organ, prompt_type)] = dice_score(masks[0], mask)
    sync(model.device)
    return time.perf_counter() - start, dice


def suite_task1(model, store, prompt_types, precision: str, encoder_precision: str, cache_root: Path,
                seed: int = 0) -> tuple[float, float, dict]:
    """(seconds with a cold cache, seconds of decoding alone, Dice per sample) by the suite's own path."""
    from utils.core.device import auto_batch
    from utils.embeddings.cache import EmbeddingCache
    from utils.eval.segmentation import evaluate_prompt

    shutil.rmtree(cache_root, ignore_errors=True)
    start = time.perf_counter()
    cache = EmbeddingCache(model, store, root=cache_root, encoder_precision=encoder_precision)
    cache.ensure(batch_size=auto_batch(model.device, "encode"), progress=False)
    decode_start = time.perf_counter()
    dice = {}
    for prompt_type in prompt_types:
        _, records = evaluate_prompt(cache, cache.samples(range(len(cache))), prompt_type, seed=seed,
                                     batch_size=auto_batch(model.device, "decode"), precision=precision)
        dice.update({(r["row"], r["organ"], prompt_type): r["dice"] for r in records})
    sync(model.device)
    end = time.perf_counter()
    shutil.rmtree(cache_root, ignore_errors=True)
    return end - start, end - decode_start, dice


def bench_task1(device: torch.device, progress: bool) -> dict:
    from utils.data.slice_store import SliceStore
    from utils.eval.dice import summarise_dice
    from utils.inference.prompts import PROMPT_TYPES
    from utils.models.sam import load_model

    model = load_model("lite_medsam", device=device)
    store = SliceStore(phantom_store(f"task1-{device.type}", **TASK1_PHANTOM[device.type]))
    prompts = list(PROMPT_TYPES)
    n_prompts = sum(len(r.organs) for r in store.records) * len(prompts)
    suite = {}
    for precision, encoder_precision in task1_variants(device):
        name = f"decoder {precision}, encoder {encoder_precision}"
        seconds, decode_seconds, dice = suite_task1(model, store, prompts, precision, encoder_precision,
                                                    BENCH_DATA / "task1-cache")
        suite[name] = {"seconds": round(seconds, 2), "decode_seconds": round(decode_seconds, 2), "dice": dice,
                       "flags": f"--precision {precision} --encoder-precision {encoder_precision}"}
        print(f"  task1 suite, {name}: {seconds:.1f} s ({decode_seconds:.1f} s decoding)", flush=True)
    naive_seconds, naive_dice = naive_task1(model, store, prompts, progress=progress)
    print(f"  task1 naive SamPredictor loop: {naive_seconds:.1f} s", flush=True)

    def mdice(dice, prompt_type):  # the suite's own summary: mean over organs of the mean over slices
        return summarise_dice((organ, d) for (_, organ, p), d in dice.items() if p == prompt_type)["mDice"]

    reference = suite["decoder fp32, encoder fp32"]
    result = {
        "store": store.description, "slices": len(store), "prompts_decoded": n_prompts, "model": model.name,
        "naive_seconds": round(naive_seconds, 2),
        "naive_vs_suite_fp32_max_dice_difference": round(
            max(abs(naive_dice[k] - reference["dice"][k]) for k in naive_dice), 6),
        "mDice": {"naive (fp32)": {p: round(mdice(naive_dice, p), 4) for p in prompts}},
        "suite": {},
    }
    for name, r in suite.items():
        result["suite"][name] = {"flags": r["flags"], "seconds": r["seconds"], "decode_seconds": r["decode_seconds"],
                                 "speedup": round(naive_seconds / r["seconds"], 2)}
        result["mDice"][f"suite, {name}"] = {p: round(mdice(r["dice"], p), 4) for p in prompts}
    result["speedup_fp32"] = result["suite"]["decoder fp32, encoder fp32"]["speedup"]
    result["target_5x_met"] = result["speedup_fp32"] >= 5
    return result


# ------------------------------------------------------------------------------------------ memory
# Runs a script and prints its own peak RSS. Not ru_maxrss from wait4: Linux carries the parent's
# high-water mark into a forked child across exec, so children of this (large) process would all
# report at least its size. VmHWM belongs to the memory map the child's exec created.
_PEAK_LAUNCHER = """
import runpy, sys
sys.argv = sys.argv[1:]
code = 0
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
try:
    with open("/proc/self/status") as f:
        peak = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
except (OSError, StopIteration):  # no procfs (macOS) or no VmHWM: ru_maxrss, which may include the parent's
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (1024 if sys.platform == "darwin" else 1)
print(f"PEAK_RSS_KIB={peak}")
sys.exit(code)
"""


def peak_rss_mb(command: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of ``python script args...``, measured inside the child (Linux)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _PEAK_LAUNCHER, *command], cwd=ROOT, capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}):\n{output[-3000:]}")
    peak_kib = int(output.rsplit("PEAK_RSS_KIB=", 1)[1].split()[0])
    return peak_kib / 1024, time.perf_counter() - start


def bench_memory(device: torch.device) -> list[dict]:
    from utils.data.slice_store import SliceStore
    from utils.embeddings.cache import DEFAULT_CACHE_ROOT, EmbeddingCache
    from utils.models.sam import load_model

    # The study's own cache root: the 120-slice store is the default phantom, so after `make reproduce`
    # its embeddings are already there (caches are keyed by store content, so sharing is safe).
    cache_root = DEFAULT_CACHE_ROOT
    model = load_model("lite_medsam", device=device)
    rows = []
    for name, spec in MEMORY_STORES.items():
        store_path = phantom_store(f"memory-{name}", spec["volumes"], spec["slices"])
        cache = EmbeddingCache(model, SliceStore(store_path), root=cache_root)
        cache.ensure(progress=False)  # encoded once, outside the measured runs
        scratch = BENCH_DATA / f"scratch-{name}"
        common = ["--slices", str(store_path), "--cache-dir", str(cache_root), "--results", str(scratch),
                  "--device", str(device), "--no-progress"]
        runs = {
            "task1": ["segmentation_task1.py", *common, "--split", "all", "--prompts", "bound_box",
                      "--overlays", "0"],
            "task2": ["finetune_task2.py", *common, "--preset", "quick", "--prompts", "bound_box",
                      "--epochs", "1", "--checkpoint-dir", str(scratch / "checkpoints")],
        }
        for task, command in runs.items():
            rss, seconds = peak_rss_mb(command)
            rows.append({"task": task, "store": name, "slices": len(cache), "cache_mb": round(
                (cache.path / "embeddings.npy").stat().st_size / 2**20, 1), "peak_rss_mb": round(rss, 1),
                "seconds": round(seconds, 1)})
            print(f"  memory {task} on {len(cache)} slices: peak RSS {rss:.0f} MB", flush=True)
        shutil.rmtree(scratch, ignore_errors=True)
    for task in ("task1", "task2"):
        small, large = [r for r in rows if r["task"] == task]
        large["growth_mb"] = round(large["peak_rss_mb"] - small["peak_rss_mb"], 1)
        # Loading the cache whole would add the difference in cache size; flat = under half of that.
        large["flat"] = large["growth_mb"] < 0.5 * (large["cache_mb"] - small["cache_mb"])
    return rows


# ------------------------------------------------------------------------------------------ report
def markdown(result: dict) -> str:
    from utils.report.markdown import markdown_table

    lines = [f"# Benchmarks ({result['machine']})", "", f"Device: {result['device']}; torch {result['torch']}; "
             f"runtime settings: {result.get('runtime')}; {result['date']}. Command: `{result['command']}`.", ""]
    if "encoder" in result:
        lines += ["## Image encoder", "", markdown_table(
            ["model", "weights", "precision", "batch", "slices/s", "s/slice"],
            [[r["model"], r["weights"], r["precision"], r["batch"], f"{r['slices_per_s']:.2f}", f"{r['s_per_slice']:.3f}"]
             for r in result["encoder"]])]
    if "decoder" in result:
        lines += ["## Mask decoder", "", markdown_table(
            ["precision", "inference batch", "prompts/s (inference)", "train batch", "samples/s (training)"],
            [[r["precision"], r["inference_batch"], f"{r['inference_prompts_per_s']:.1f}", r["train_batch"],
              f"{r['train_samples_per_s']:.1f}"] for r in result["decoder"]])]
    if "training" in result:
        tr = result["training"]
        lines += ["## Training steps: exact path vs fast path (interleaved in one process)", "", markdown_table(
            ["model, slices", "task", "batch", "path", "samples/s", "samples per CPU s", "speed-up", "first round s",
             "decoder"],
            [[r["config"], r["task"], r["batch"], r["path"], f"{r['samples_per_s']:.1f}", f"{r['samples_per_cpu_s']:.1f}",
              f"{r['speedup']:.2f}x", f"{r['first_round_s']:.1f}", r["compile"]] for r in tr["rows"]]), ""]
        est = tr["estimate"]
        a = est["assumed"]
        lines += [f"Paper preset on BTCV, training only, at the ViT-B-shaped rate (best batch) on this {est['device']}: "
                  f"{a['task2_sample_steps']:,} Task 2 sample-steps (30,000 (slice, organ, view) samples x 50 epochs x "
                  f"5 prompts) + {a['task3_sample_steps']:,} Task 3 sample-steps: "
                  + "; ".join(f"{k} {v['hours']} h" for k, v in est.items() if isinstance(v, dict) and "hours" in v)
                  + ".", ""]
    if "task1" in result:
        t = result["task1"]
        rows = [["naive: SamPredictor.set_image + predict per (slice, organ, prompt), fp32",
                 f"{t['naive_seconds']:.1f}", "-", "1.0x"]]
        rows += [[f"suite: embedding cache + batched decoding, {name} (`{r['flags']}`)", f"{r['seconds']:.1f}",
                  f"{r['decode_seconds']:.1f}", f"{r['speedup']:.1f}x"] for name, r in t["suite"].items()]
        lines += [f"## Task 1 end to end ({t['store']}: {t['slices']} slices, {t['prompts_decoded']} prompts, "
                  f"{t['model']})", "", markdown_table(["path", "seconds", "decoding s", "speed-up"], rows),
                  f"Largest per-sample Dice difference, naive vs suite fp32: "
                  f"{t['naive_vs_suite_fp32_max_dice_difference']}.", "",
                  markdown_table(["path", *next(iter(t["mDice"].values())).keys()],
                                 [[k, *v.values()] for k, v in t["mDice"].items()])]
    if "memory" in result:
        lines += ["## Peak resident memory", "", markdown_table(
            ["task", "store slices", "cache MB", "peak RSS MB", "growth MB", "flat"],
            [[r["task"], r["slices"], f"{r['cache_mb']:.0f}", f"{r['peak_rss_mb']:.0f}",
              f"{r['growth_mb']:+.0f}" if "growth_mb" in r else "-", r.get("flat", "-")] for r in result["memory"]]),
                  "Flat: the larger store's peak grew by less than half of what loading the cache whole would add "
                  "(the difference in cache size).", ""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    from utils.core.device import configure_runtime, describe, pick_device
    from utils.core.io import write_json, write_text
    from utils.scaffold.session import quiet_third_party

    quiet_third_party()
    if args.no_progress:
        os.environ["TQDM_DISABLE"] = "1"
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        print(f"error: unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    device = pick_device(args.device)
    runtime = configure_runtime(device)
    result = {"machine": f"{platform.node()}: {describe(device)}", "device": describe(device), "runtime": runtime,
              "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d %H:%M"), "command": "python benchmarks/run.py " + " ".join(argv or sys.argv[1:])}
    started = time.perf_counter()
    runners = {
        "encoder": lambda: bench_encoder([m.strip() for m in args.encoders.split(",") if m.strip()], device),
        "decoder": lambda: bench_decoder(device),
        "training": lambda: bench_training(device, args.compile_on_cpu),
        "task1": lambda: bench_task1(device, progress=not args.no_progress),
        "memory": lambda: bench_memory(device),
    }
    for section in SECTIONS:
        if section in sections:
            result[section] = runners[section]()
            result["seconds"] = round(time.perf_counter() - started, 1)
            write_json(args.out / "bench.json", result)  # after every section: a crash keeps what was measured
            write_text(args.out / "bench.md", markdown(result))
    print(f"\n{markdown(result)}\nwrote {args.out / 'bench.json'} and {args.out / 'bench.md'} in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    from utils.scaffold.boundary import run_script  # the one error boundary (--debug: tracebacks)

    sys.exit(run_script(main))
