"""Benchmark: the interactive training step (utils.train.interactive) on the LiteMedSAM decoder.

    python benchmarks/interactive_step.py                      # rounds 1, 4, 8 at batch 8, fp32 and bf16
    python benchmarks/interactive_step.py --rounds 1,4 --steps 5 --device cuda

Samples/s of one optimiser step (every round's forward, the loss over rounds, backward, SGD step) on
phantom 160x160 slices with LiteMedSAM's real weights and cached embeddings, the exact path (fp32)
and bf16 autocast interleaved step by step so that both see the same machine load. A sample costs
about (rounds + 1) decoder forward + backward passes. A section for benchmarks/run.py to adopt.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", default="1,4,8", help="comma-separated correction-round counts")
    parser.add_argument("--batch", type=int, default=8, help="samples per step")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant before them")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "bench" / "interactive",
                        help="where the phantom store and its cache are built once")
    return parser.parse_args(argv)


def phantom_cache(folder: Path, device: torch.device):
    """A 1-volume, 2-slice 160x160 phantom store (utils.data.phantom) and its LiteMedSAM cache, built once."""
    from utils.data.phantom import PhantomConfig, write_phantom_dataset
    from utils.data.slice_store import SliceStore, build_store
    from utils.embeddings.cache import EmbeddingCache
    from utils.models.sam import load_model

    config = PhantomConfig(shape=(160, 160, 2), spacing=(2.4, 2.4, 45.0), n_volumes=1)
    raw = write_phantom_dataset(folder / "phantom", config, progress=False)
    store_path, _ = build_store(raw.parent, folder / "slices", progress=False)
    model = load_model("lite_medsam", device=device)
    for p in model.sam.parameters():
        p.requires_grad_(False)
    cache = EmbeddingCache(model, SliceStore(store_path), root=folder / "cache")
    cache.ensure(progress=False)
    return model, cache


def measure(model, cache, rounds: int, batch: int, steps: int, warmup: int = 1) -> dict:
    """{precision: (samples/s wall, samples per CPU second)} for fp32 and bf16 steps at ``rounds``,
    interleaved step by step, after ``warmup`` untimed steps each. CPU seconds: this process's user + sys
    (on a shared machine the wall rate also counts the time others hold the cores)."""
    from utils.train.interactive import InteractiveSettings, make_interactive_step

    samples = [(0, r, o) for r, o in cache.index.samples(range(len(cache)))]
    settings = InteractiveSettings(rounds=rounds)
    variants = {}
    for precision in ("fp32", "bf16"):
        trainable = torch.nn.ModuleDict({"prompt_encoder": copy.deepcopy(model.sam.prompt_encoder),
                                         "mask_decoder": copy.deepcopy(model.sam.mask_decoder)}).requires_grad_(True)
        optimizer = torch.optim.SGD(trainable.parameters(), lr=1e-3, momentum=0.9)
        variants[precision] = (make_interactive_step([cache], settings, 0, trainable, precision), optimizer)
    wall = {p: 0.0 for p in variants}
    cpu = {p: 0.0 for p in variants}
    for i in range(warmup + steps):
        chosen = [samples[(i * batch + k) % len(samples)] for k in range(batch)]
        for precision, (step, optimizer) in variants.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            result = step(chosen, i)
            optimizer.zero_grad(set_to_none=True)
            result.loss.backward()
            optimizer.step()
            if model.device.type == "cuda":
                torch.cuda.synchronize(model.device)
            if i >= warmup:
                wall[precision] += time.perf_counter() - start
                cpu[precision] += time.process_time() - start_cpu
    n = steps * batch
    return {p: (round(n / wall[p], 3), round(n / cpu[p], 3)) for p in variants}


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    model, cache = phantom_cache(args.data, device)
    print(f"interactive step, lite_medsam, phantom 160x160, batch {args.batch}, {args.steps} timed step(s) after "
          f"{args.warmup} warm-up, {torch.get_num_threads()} threads, {device}")
    print("| rounds | fp32 samples/s (per CPU s) | bf16 samples/s (per CPU s) | bf16 / fp32 (CPU) |\n|---|---|---|---|")
    for rounds in (int(r) for r in args.rounds.split(",")):
        (w32, c32), (w16, c16) = measure(model, cache, rounds, args.batch, args.steps, args.warmup).values()
        print(f"| {rounds} | {w32} ({c32}) | {w16} ({c16}) | {c16 / c32:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
