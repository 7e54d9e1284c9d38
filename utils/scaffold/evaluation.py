"""The evaluation scaffold: what every evaluation script (Task 1, the interactive and 3-D stages, a future
one) stands on, so that the script itself is only its loop and its metric.

    ev = Evaluation(args, "task1")                   # clocks start; writes to results/task1[_finetuned]/
    prompt_types = ev.parse(parse_prompt_types, args.prompts)   # a bad value: one error line, exit 1
    ev.open()                                        # seed, store, model, device, cache (open_experiment)
    choices = ev.open_decoders(prompt_types)         # --finetuned: each prompt type's decoder (open_decoders)
    ev.encode(ev.split_rows())                       # the --split's slices, encoded (timed) where not cached
    samples = ev.samples()                           # their (cache row, organ) samples
    meta = ev.provenance(n_samples=len(samples))     # data, model, device, seed, date, + the script's own
    results = ev.header(meta, prompts={})            # model, checkpoint, data, split, <own keys>, provenance, timing
    ...                                              # the script's loop and metric: ev.score_prompt (Dice of
                                                     # a prompt type), ev.decoder(choice) (a CacheDecoder)
    results["timing"] = ev.timing(decoded_prompts=n) # encoded_slices, <own timings>, device
    ev.write(results, {"table1.md": table})          # torchrun: every rank holds the results; rank 0 writes

Under torchrun the collective steps (encoding, ``evaluate_prompt``) share the work and gather the results on
every rank; :meth:`Evaluation.write` and :attr:`Evaluation.is_main` keep files to rank 0.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from utils.core import distributed
from utils.core.checkpoints import INTERACTIVE
from utils.inference.decoder import CacheDecoder
from utils.scaffold.results import config_record, provenance, results_header, write_csv, write_results
from utils.scaffold.session import (
    PROPAGATION_CHOICE,
    DecoderChoice,
    Experiment,
    fail,
    open_decoders,
    open_experiment,
)


class Evaluation:
    """One evaluation run: its flags, session, rows, encoding time, provenance and results folder.

    args: the script's parsed flags (``utils.scaffold.flags.new_task_parser``, with ``--finetuned``);
    name: the results folder under ``--results`` (``<name>_finetuned`` when ``--finetuned`` names Task 2's
    decoders, ``<name>_trained`` when it names the interactive decoder, ``<name>_propagation`` for the propagation
    decoder).
    """

    def __init__(self, args: argparse.Namespace, name: str):
        self.args, self.name = args, name
        self.interactive = False  # set by open_decoders: the interactive decoder (finetune_interactive.py)
        self.propagation = False  # set by open_decoders: Task 2's propagated_box decoder for every prompt type
        self.finetuned = getattr(args, "finetuned", "none") != "none"
        self.out: Path = args.results / (f"{name}_finetuned" if self.finetuned else name)
        self.started, self.cpu_started = time.perf_counter(), time.process_time()
        self.exp: Experiment | None = None
        self.rows: list[int] = []
        self.encoded, self.encode_seconds = 0, 0.0
        self.meta: dict = {}

    @staticmethod
    def parse(parse: Callable[[str], Any], text: str) -> Any:
        """``parse(text)``; its ValueError (a bad flag value) becomes the one-line user error."""
        try:
            return parse(text)
        except ValueError as exc:
            raise fail(str(exc)) from exc

    def open(self) -> Experiment:
        """Seed, open the store, load the model on the device, open its cache (:func:`open_experiment`)."""
        self.exp = open_experiment(self.args)
        return self.exp

    @property
    def cache(self):
        return self.exp.cache

    @property
    def is_main(self) -> bool:
        """True on the process that writes files (always, outside torchrun)."""
        return distributed.is_main()

    def open_decoders(self, prompt_types: Sequence[str], require_finetuned: bool = False,
                      **handoff) -> dict[str, DecoderChoice]:
        """Each prompt type's prompt encoder + mask decoder from ``--finetuned`` (:func:`open_decoders`; ``handoff``:
        its ``trained_on`` / ``same_prompt``). With the interactive decoder the results go to ``<name>_trained``
        instead of ``<name>_finetuned``."""
        choices = open_decoders(self.args, self.exp, list(prompt_types), require_finetuned=require_finetuned,
                                **handoff)
        self.interactive = any(c.handoff is not None and c.handoff.identity.get("task") == INTERACTIVE
                               for c in choices.values())
        self.propagation = getattr(self.args, "finetuned", "none") == PROPAGATION_CHOICE
        if self.interactive:
            self.out = self.args.results / f"{self.name}_trained"
        elif self.propagation:
            self.out = self.args.results / f"{self.name}_propagation"
        return choices

    @property
    def decoder_kind(self) -> str:
        """Which decoders this run scores, for titles: zero-shot, Task 2's, or the interactive decoder."""
        if self.interactive:
            return "interactive decoder"
        if self.propagation:
            return "propagation decoder"
        return "fine-tuned" if self.finetuned else "zero-shot"

    @property
    def decoder_title(self) -> str:
        """:attr:`decoder_kind` as every script's table and figure titles name it."""
        return {"fine-tuned": "Task 2's fine-tuned decoders", "interactive decoder": "the interactive decoder",
                "propagation decoder": "the propagation decoder"}.get(self.decoder_kind, self.decoder_kind)

    def decoder(self, choice: DecoderChoice, multimask_output: bool = False) -> CacheDecoder:
        """A :class:`CacheDecoder` over the cache with ``choice``'s weights at ``--precision``."""
        return CacheDecoder(self.cache, choice.prompt_encoder, choice.mask_decoder, self.args.precision,
                            multimask_output)

    def score_prompt(self, samples: Sequence[tuple[int, int]], prompt_type: str, choice: DecoderChoice,
                     box_jitter: int, multimask_output: bool = False, progress: bool = True) -> tuple[dict, list[dict]]:
        """Dice of every sample with ``prompt_type`` prompts decoded with ``choice``'s weights, at ``--seed``,
        ``--decode-batch`` and ``--precision`` (:func:`utils.eval.segmentation.evaluate_prompt`; collective
        under torchrun). ``progress``: a bar unless ``--no-progress``."""
        from utils.eval.segmentation import evaluate_prompt

        args = self.args
        return evaluate_prompt(self.cache, samples, prompt_type, seed=args.seed, batch_size=args.decode_batch,
                               multimask_output=multimask_output, prompt_encoder=choice.prompt_encoder,
                               mask_decoder=choice.mask_decoder, progress=progress and not args.no_progress,
                               precision=args.precision, box_jitter=box_jitter)

    def split_rows(self) -> list[int]:
        """The cache rows of ``--split``; an error naming the store when it has none."""
        rows = self.cache.index.rows_for(self.args.split)
        if not rows:
            raise fail(f"{self.exp.store.path}: the store has no {self.args.split} slices; try --split all")
        return rows

    def encode(self, rows: Sequence[int]) -> int:
        """Encode the ``rows`` the cache lacks (collective under torchrun), timed; they become :attr:`rows`."""
        self.rows = list(rows)
        started = time.perf_counter()
        self.encoded = self.cache.ensure(self.rows, batch_size=self.args.encode_batch,
                                         progress=not self.args.no_progress)
        self.encode_seconds = time.perf_counter() - started
        return self.encoded

    def samples(self) -> list[tuple[int, int]]:
        """Every (cache row, organ) sample of :attr:`rows`, in the store's order."""
        return self.cache.index.samples(self.rows)

    def describe(self, what: str, then: str | None = None) -> str:
        """The opening line: '<data>: <what>; model M on D; <then, or what was encoded in how long>'."""
        exp = self.exp
        then = then or f"encoded {self.encoded} new slice(s) in {self.encode_seconds:.1f} s"
        return f"{exp.store.description}: {what}; model {exp.model.name} on {exp.device}; {then}"

    def provenance(self, **extra: Any) -> dict:
        """:func:`utils.scaffold.results.provenance` with the decoder/encoder precision and ``n_slices``, then
        ``extra`` (the script's own fields, in order); kept as :attr:`meta`."""
        args, exp = self.args, self.exp
        self.meta = provenance(exp.store, exp.model, exp.device, args.seed, args.split, precision=args.precision,
                               encoder_precision=args.encoder_precision, n_slices=len(self.rows), **extra)
        return self.meta

    @staticmethod
    def header(meta: dict, **keys: Any) -> dict:
        """A results dict: model, checkpoint, data and split, then ``keys`` in order, then provenance and
        an empty timing block (filled at the end with :meth:`timing`)."""
        return results_header(meta, **keys, provenance=meta, timing={})

    @property
    def encoder_seconds_per_slice(self) -> float | None:
        return round(self.encode_seconds / self.encoded, 4) if self.encoded else None

    @staticmethod
    def rate(count: int, seconds: float) -> float | None:
        """count / seconds to 2 decimals (None for no time)."""
        return round(count / seconds, 2) if seconds else None

    def clock(self) -> dict:
        """Wall and CPU seconds of this process since the Evaluation was made."""
        return {"wall_seconds": round(time.perf_counter() - self.started, 2),
                "cpu_seconds": round(time.process_time() - self.cpu_started, 2)}

    def timing(self, **timings: Any) -> dict:
        """The timing block: encoded_slices, then ``timings`` in order, then the device."""
        return {"encoded_slices": self.encoded, **timings, "device": self.meta["device"]}

    def write(self, results: dict, tables: dict[str, str],
              csvs: dict[str, tuple[Sequence[str], Sequence[Sequence[Any]]]] | None = None) -> None:
        """On rank 0: metrics.json, the Markdown tables, config.json (the final flags) and each CSV
        {file name: (headers, rows)} into :attr:`out`."""
        if not self.is_main:  # torchrun: every rank holds the gathered results; rank 0 writes them
            return
        write_results(self.out, results, tables, config_record(self.args))
        for name, (headers, rows) in (csvs or {}).items():
            write_csv(self.out / name, headers, rows)
