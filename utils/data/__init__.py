"""CT volumes on disk and the 2-D slice store cut from them: BTCV layouts, the phantom, augmentation, the (slice,
organ) sample list, NIfTI export.

Modules:
- ``augmentation``: Task 2's augmentation (random flip, rotation, intensity shift), deterministic per slice and view.
- ``ct``: A CT without labels as the slice store would cut it, and points in voxels, mm and the display stack.
- ``dataset``: Finding BTCV volumes on disk, splitting them 24/6, and loading them through MONAI.
- ``nifti``: Predicted label maps back onto the source CT's own voxel grid, as NIfTI files that open over the CT.
- ``phantom``: A synthetic, deterministic abdominal CT phantom in BTCV format (a package: anatomy, tissues, organs, volume, writing).
- ``samples``: The one (slice, organ) sample list: the rows of a store (or of its augmented views) and what each is.
- ``slice_store``: The 2-D slice store.
- ``volumes``: Whole volumes in a dense slice store: which the 3-D stage evaluates, their ground truth and slice rows.
"""
from utils.data.augmentation import AugmentSpec, augment_view  # noqa: F401
from utils.data.ct import CTVolume, load_ct, load_label_display  # noqa: F401
from utils.data.dataset import (  # noqa: F401
    MONAI_VAL_CASE_IDS,
    NIFTI_SUFFIXES,
    SPLITS,
    CaseFiles,
    DataError,
    Volume,
    discover_cases,
    load_volume,
    select_split,
)
from utils.data.nifti import (  # noqa: F401
    display_to_ras,
    merge_organ_logits,
    ras_shape,
    ras_to_display,
    ras_to_source,
    source_to_ras,
    write_label_nifti,
)
from utils.data.phantom import (  # noqa: F401
    PHANTOM_CASE_IDS,
    PHANTOM_NOTE,
    PHANTOM_VERSION,
    PhantomConfig,
    make_volume,
    phantom_affine,
    write_phantom_dataset,
)
from utils.data.samples import SampleIndex  # noqa: F401
from utils.data.slice_store import (  # noqa: F401
    DEFAULT_WINDOW,
    STORE_FORMAT_VERSION,
    SliceRecord,
    SliceStore,
    build_store,
    iter_organ_masks,
    resolve_store,
    store_key,
    store_settings,
    tight_box,
    volume_to_display,
)
from utils.data.volumes import VolumeSlices, plan_volumes  # noqa: F401
