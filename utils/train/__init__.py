"""Training: the one loop of Tasks 2, 3 and the baselines, its fast path, and each task's step (including the interactive sessions' step).

Modules:
- ``baseline``: Training the supervised 2-D baselines (U-Net / ResU-Net, :mod:`utils.models.unet`) on the slice store.
- ``classifier_step``: Task 3's training step: the classifying mask decoder names the organ of each sample.
- ``decoder_step``: Task 2's training step: SAM's prompt encoder + mask decoder on cached embeddings, Dice loss.
- ``fastpath``: The training fast path of Tasks 2 and 3.
- ``interactive``: Interactive fine-tuning: one training step over simulated correction sessions, on cached embeddings.
- ``loop``: The one training loop of Tasks 2 and 3.
- ``task2_data``: Task 2's inputs and results: embeddings, samples, the fast path and --largest-batch, starting weights, the zero-shot scores, metrics.json.
"""
from utils.train.baseline import (  # noqa: F401
    SliceLoader,
    SliceRef,
    default_loss,
    foreground_dice,
    make_baseline_step,
    training_slices,
)
from utils.train.classifier_step import make_class_step  # noqa: F401
from utils.train.decoder_step import (  # noqa: F401
    PreparedGroup,
    largest_decoder_batch,
    make_prepare,
    make_step,
    trainable_decoder,
)
from utils.train.fastpath import (  # noqa: F401
    SWITCH,
    TRAIN_PRECISIONS,
    CompiledOrEager,
    FastPath,
    ResidentEmbeddings,
    batches,
    cuda_step_fits,
    fits_on_device,
    grad_scaler,
    largest_batch,
    resolve,
    scaled_lr,
    slice_grouped,
)
from utils.train.interactive import (  # noqa: F401
    LOSSES,
    SESSION_STREAM,
    InteractiveSettings,
    InteractiveStepResult,
    SessionGroup,
    SessionRounds,
    decode_session_round,
    encode_prompts,
    feedback,
    interactive_identity,
    make_interactive_step,
    make_session_prepare,
    next_round_inputs,
    prompt_kind,
    run_session,
    session_loss,
    session_rng,
)
from utils.train.loop import (  # noqa: F401
    LoopConfig,
    StepResult,
    TrainingDiverged,
    backward_step,
    epoch_order,
    run_training,
)
from utils.train.task2_data import (  # noqa: F401, E402
    START_FROM,
    TrainingData,
    at_largest_batch,
    original_results,
    prepare_data,
    start_weights,
    task2_results,
)
