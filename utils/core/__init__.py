"""Foundations every stage uses: atomic files, checkpoint files, hashing, the suite's errors, seeding,
device and precision, torchrun, the 13 organs.

Modules:
- ``checkpoints``: Checkpoint files: read on the CPU, written atomically, and their kinds told apart.
- ``device``: The one place that picks a torch device and sets the process up to run fast on it.
- ``distributed``: Several processes on one job.
- ``errors``: The suite's own errors (``SuiteError`` and the kinds every stage raises).
- ``hashing``: Digests of files and short keys of settings: the one place the suite hashes anything.
- ``io``: Atomic writes.
- ``organs``: The 13 BTCV organs, in label order (label value = index + 1; 0 is background).
- ``precision``: Mixed precision.
- ``seeding``: Seeding.
"""
from utils.core.checkpoints import (  # noqa: F401
    KINDS,
    check_kind,
    checkpoint_kind,
    cpu_state,
    load_checkpoint,
    save_checkpoint,
    weights_of,
)
from utils.core.device import (  # noqa: F401
    AUTO_BATCH,
    auto_batch,
    configure_runtime,
    cpu_name,
    describe,
    keep_freed_memory,
    pick_device,
)
from utils.core.distributed import (  # noqa: F401
    all_sum,
    barrier,
    broadcast,
    data_parallel_step,
    device_for_rank,
    gather,
    global_rank,
    init,
    is_distributed,
    is_main,
    launched,
    local_rank,
    main_first,
    main_then_share,
    map_batches,
    rank,
    shard,
    solo,
    world_size,
)
from utils.core.errors import CheckpointError, ResultsError, SuiteError  # noqa: F401
from utils.core.hashing import file_sha256, files_digest, json_key, short_digest  # noqa: F401
from utils.core.io import atomic_path, read_json, write_json, write_text  # noqa: F401
from utils.core.organs import MAX_LABEL, NUM_ORGANS, ORGAN_TITLES, ORGANS, organ_name, organ_title  # noqa: F401
from utils.core.precision import PRECISIONS, autocast, cpu_has_amx  # noqa: F401
from utils.core.seeding import child_rng, seed_everything  # noqa: F401
