"""The networks: the SAM family (SAM ViT-B/L/H, LiteMedSAM) with their preprocessing, and the U-Net baselines.

Modules:
- ``sam``: Every supported model, and how to feed it.
- ``unet``: Supervised 2-D baselines for Table 3.
"""
from utils.models.sam import (  # noqa: F401
    CHECKPOINT_DIR,
    LITE_MEDSAM_CHECKPOINT,
    MODEL_NAMES,
    SAM_CHECKPOINTS,
    SAM_DOWNLOAD,
    CheckpointError,
    SamModel,
    build_lite_medsam,
    decoder_from_state,
    file_sha256,
    load_model,
    to_uint8,
)
from utils.models.unet import (  # noqa: F401
    ARCHS,
    NUM_CLASSES,
    PAPER_CHANNELS,
    QUICK_CHANNELS,
    RES_UNITS,
    build_baseline,
    forward_logits,
    network_device,
    organ_masks_from_prediction,
    pad_images,
    predict_label_maps,
    restrict_to_box,
    size_multiple,
)
