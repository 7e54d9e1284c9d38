"""Turning prompts into masks: prompts drawn from labels, the one decoder over the cache, clicks, rounds,
propagation through a volume, the 3-D protocols, and Task 3's class predictions.

Modules:
- ``batches``: Batches of (cache row, organ) samples.
- ``classify``: Task 3's inference.
- ``clicks``: Correction clicks: where the next one goes, and what it may change (global or local refinement).
- ``clicks3d``: The 3-D click protocol (CVPR 2025): clicks on a 3-D box result and what each changes.
- ``decoder``: The one decoder over the embedding cache: segment-anything's ``SamPredictor``, for many slices at once.
- ``decoding``: Prompt encoding and mask decoding in batches, from cached embeddings (the paired primitive).
- ``naming``: Naming the organ of a person's prompt with Task 3's classifier (``segment_volume.py --classifier``).
- ``prompt_file``: A person's prompts for a CT without labels (segment_volume.py), checked and converted.
- ``prompts``: Prompts made from a slice's ground-truth organ mask.
- ``propagation``: Whole organs from one prompt.
- ``rounds``: Rounds of interactive decoding.
- ``segment3d``: The 3-D protocols: a volume's label map from 2-D decoding of its stored slices.
- ``training_clicks``: Start prompts and correction clicks of simulated interactive sessions, as training draws them.
"""
from utils.inference.batches import (  # noqa: F401
    build_batch,
    gather_embeddings,
    group_by_size,
    prompt_for,
    sample_prompt,
)
from utils.inference.classify import class_forward, class_inputs, class_logits, predict_classes  # noqa: F401
from utils.inference.clicks import CLICK_RULES, CONNECTIVITY, Click, next_click, with_click  # noqa: F401
from utils.inference.clicks3d import REPROPAGATION, Click3D, ClickSession, next_click_3d  # noqa: F401
from utils.inference.decoder import CacheDecoder, slice_embeddings  # noqa: F401
from utils.inference.decoding import decode, decode_inputs, predict_masks_paired, prompt_inputs  # noqa: F401
from utils.inference.naming import Naming, assign_organs, name_organs  # noqa: F401
from utils.inference.prompt_file import (  # noqa: F401
    OrganPrompt,
    box3d_prompt_spec,
    prompts_of_spec,
    read_prompt_file,
    read_prompt_spec,
)
from utils.inference.prompts import (  # noqa: F401
    ALL_PROMPT_TYPES,
    BOX_PROMPTS,
    DEFAULT_BOX_JITTER_PX,
    DEFAULT_NEGATIVE_MARGIN_PX,
    LARGER_BOX_GROWTH_PX,
    PROMPT_TITLES,
    PROMPT_REGISTRY,
    STUDY_PROMPTS,
    Prompt,
    PromptType,
    carried_box,
    bound_box,
    central_point,
    grow_box,
    grown_box,
    is_box_prompt,
    jittered_box,
    larger_box,
    make_prompt,
    margin_px,
    prompt_type,
    negative_points,
    parse_prompt_types,
    prompt_type_id,
    random_points,
)
from utils.inference.propagation import (  # noqa: F401
    CARRY_MODES,
    DIRECTIONS,
    HOLD_PROMPTS,
    KEY_SLICES,
    PROPAGATION_HYPERPARAMETERS,
    STOP_ANOTHER_ORGAN,
    STOP_AREA_JUMP,
    STOP_BELOW_MIN_AREA,
    STOP_EMPTY,
    STOP_LOW_OVERLAP,
    STOP_RANGE_END,
    STOP_VOLUME_END,
    Answer,
    Propagation,
    PropagationSettings,
    Request,
    StopRules,
    carried_kind,
    carry_prompt,
    key_slice,
    next_prompt,
    propagate,
    propagate_batch,
)
from utils.inference.rounds import DecodeRound, Rounds, run_rounds  # noqa: F401
from utils.inference.training_clicks import draw_start_prompt, sample_training_click  # noqa: F401
from utils.inference.segment3d import (  # noqa: F401
    DecodeRows,
    largest_component_3d,
    merge_slices,
    propagate_organs,
    segment_clicks3d,
    segment_per_slice,
    segment_propagate,
)
