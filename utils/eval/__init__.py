"""Metrics, one per module (as in MONAI): slice Dice, volume Dice/HD95/NSD, bootstrap intervals, accuracy,
NoC, Dice AUC, and the scoring loops of SAM prompts and the baselines.

Modules:
- ``accuracy``: Task 3's classification scores.
- ``auc``: Dice AUC: one number for a whole Dice-vs-clicks curve, beside NoC.
- ``baseline``: Scoring the supervised 2-D baselines on Task 1's (slice, organ) samples with the suite's one Dice.
- ``bootstrap``: Bootstrap confidence intervals over validation volumes, from the per-sample records the tasks write.
- ``click_response``: Does a click do what it says: the clicked pixel corrected, pixels fixed and broken near and away from it.
- ``dice``: Dice, the study's one segmentation metric, and its aggregation over organs.
- ``metrics3d``: Per-volume, per-organ 3-D metrics.
- ``noc``: Interactive-segmentation summaries.
- ``protocols3d``: Running the 3-D stage's protocols over volumes: segment, write NIfTI, read back, score.
- ``segmentation``: Dice of one prompt type over (slice, organ) samples from cached embeddings.
- ``sessions``: The interactive protocol over cached samples: a start prompt, then correction clicks, Dice per round.
- ``volume_scoring``: Scoring the 3-D stage's written label maps.

``sessions`` is not re-exported here: it stands on utils.inference.rounds, which imports utils.eval.dice, so
importing it from this file would close a cycle (import it from utils.eval.sessions).
"""
from utils.eval.accuracy import accuracy_summary, confusion_matrix  # noqa: F401
from utils.eval.auc import AUC_RULES, CVPR25_CLICKS, cvpr25_dice_auc, dice_auc, with_dice_auc  # noqa: F401
from utils.eval.baseline import EVAL_ROWS, evaluate_baseline, evaluate_baseline_rows  # noqa: F401
from utils.eval.bootstrap import (  # noqa: F401
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    bootstrap_accuracy,
    bootstrap_difference,
    bootstrap_mdice,
    bootstrap_metric,
    format_interval,
    triples,
    volume_weights,
)
from utils.eval.dice import batch_dice, dice_score, summarise_dice  # noqa: F401
from utils.eval.noc import NOC_THRESHOLDS, mean_noc, noc, summarise_rounds  # noqa: F401
from utils.eval.protocols3d import (  # noqa: F401
    BOX_MODES,
    MODES,
    VolumeProtocol,
    plan_protocols,
    remembering_decoders,
    run_protocols,
)
from utils.eval.segmentation import evaluate_prompt  # noqa: F401
from utils.eval.metrics3d import (  # noqa: F401
    NSD_TOLERANCE_MM,
    OrganScore,
    VolumeScores,
    grid_diagonal_mm,
    score_organ,
    score_volume,
    summarise_volumes,
)
from utils.eval.volume_scoring import score_written, summarise_3d  # noqa: F401
