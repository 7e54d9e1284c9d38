"""What every script stands on: hyperparameters as flags, the common flags, the session (store, model,
device, cache, decoders), the evaluation scaffold, run folders and hand-offs, results files, and the one error
boundary.

Modules:
- ``boundary``: The one error boundary every script's entry goes through (``sys.exit(run_script(main))``).
- ``config``: nanoGPT-style configuration.
- ``evaluation``: The evaluation scaffold (session, decoders, rows, timed encoding, results header, rank-0 writing).
- ``flags``: The flags task scripts share, in groups (data / SAM model / decoder / run) a script takes as it needs them, and the task parser.
- ``results``: What every results file says about where its numbers came from (:func:`provenance`), and writing results files.
- ``runs``: Run folders keyed like the caches, checked resume, and checked hand-offs between tasks.
- ``session``: The opening of every task script's ``main``: store and device (the baselines), plus SAM model and cache.
- ``training``: Around the training loop: the fast path a device can take, the keyed run folder, the timed loop in it.
- ``unlabelled``: What ``segment_volume.py`` opens without a store (model, run decoder, a CT's embeddings); its sidecar.
"""
from utils.scaffold.boundary import DEBUG_ENV, debug_requested, run_script  # noqa: F401
from utils.scaffold.config import (  # noqa: F401
    CHECKS,
    add_hyperparameters,
    checked,
    comma_list,
    new_parser,
    parse_with_presets,
    typed_destinations,
)
from utils.scaffold.evaluation import Evaluation  # noqa: F401
from utils.scaffold.flags import (  # noqa: F401
    SPLITS,
    add_common_args,
    add_data_args,
    add_decoder_args,
    add_finetuned_args,
    add_run_args,
    add_sam_args,
    flag_group,
    new_task_parser,
    one_prompt_type,
)
from utils.scaffold.results import (  # noqa: F401
    TrainedWeights,
    config_record,
    provenance,
    read_results,
    results_header,
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
    open_run,
    run_key,
    runs_in,
)
from utils.scaffold.session import (  # noqa: F401
    DecoderChoice,
    Experiment,
    Session,
    fail,
    open_decoders,
    open_experiment,
    open_model_on,
    open_session,
    quiet_third_party,
    wanted_data,
)
from utils.scaffold.training import (  # noqa: F401
    TrainedRun,
    fast_path,
    open_training_run,
    train_in_run,
)
