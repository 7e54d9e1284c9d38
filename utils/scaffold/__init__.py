"""What every script stands on: hyperparameters as flags, the common flags, the session (store, model,
device, cache, decoders), the evaluation scaffold, run folders and hand-offs, results files.

Modules:
- ``config``: nanoGPT-style configuration.
- ``evaluation``: The evaluation scaffold (session, decoders, rows, timed encoding, results header, rank-0 writing).
- ``flags``: The flags every task script shares, in groups (data / model / run), and the task parser that adds a script's own hyperparameter constants to them.
- ``results``: What every results file says about where its numbers came from (:func:`provenance`), and writing results files.
- ``runs``: Run folders keyed like the caches, checked resume, and checked hand-offs between tasks.
- ``session``: The opening of every task script's ``main``.
"""
from utils.scaffold.config import (  # noqa: F401
    CHECKS,
    add_hyperparameters,
    checked,
    new_parser,
    parse_with_presets,
    typed_destinations,
)
from utils.scaffold.evaluation import Evaluation  # noqa: F401
from utils.scaffold.flags import SPLITS, add_common_args, add_finetuned_args, new_task_parser  # noqa: F401
from utils.scaffold.results import (  # noqa: F401
    config_record,
    provenance,
    scored_alike,
    write_csv,
    write_results,
    write_training_curves,
)
from utils.scaffold.runs import (  # noqa: F401
    DATA_FIELDS,
    Handoff,
    Run,
    RunMismatch,
    differences,
    find_handoff,
    identity_of,
    load_checkpoint,
    open_run,
    run_key,
    runs_in,
)
from utils.scaffold.session import DecoderChoice, Experiment, fail, open_decoders, open_experiment, quiet_third_party  # noqa: F401
