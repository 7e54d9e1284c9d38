"""Rendering: every table of the study, the Markdown pieces they share, and every figure.

Modules:
- ``decoders``: Tables that put the decoders side by side (zero-shot, Task 2's, the interactive decoder).
- ``examples``: Example figures of decoded slices: which samples to show, and Task 1's prompt overlays.
- ``markdown``: Markdown pieces every table shares.
- ``plots``: Figures.
- ``results_files``: The results folder as make_report.py reads it (a damaged file named with its rewrite command).
- ``sections``: REPORT.md's sections, top to bottom; make_report.py assembles them.
- ``tables``: Every table of the study, rendered from the metrics dicts the scripts write (metrics.json).
"""
from utils.report.examples import median_example, pick_examples, sample_caption, save_task1_overlays  # noqa: F401
from utils.report.markdown import markdown_table, provenance_line  # noqa: F401
from utils.report.plots import (  # noqa: F401
    draw_prompt,
    label_overlay,
    save_class_examples,
    save_confusion,
    save_curves,
    save_dice_scatter,
    save_dice_vs_clicks,
    save_montage,
    save_prompt_overlays,
    save_rounds,
    save_volume_views,
)
from utils.report.tables import (  # noqa: F401
    BASELINE_ROWS,
    BASELINE_TITLES,
    CI_HEADER,
    CITED,
    SAM_ROWS,
    baseline_table,
    ci_cell,
    ci_note,
    difference,
    difference_cell,
    interval,
    mdice_table,
    organ_table,
    prompt_title,
    robustness_label,
    table1,
    table2,
    table3,
    table3_rows,
    table3d,
    table4,
    table_box_robustness,
    table_interactive,
    task3_settings_note,
    titled,
    training_precision_note,
)
from utils.report.results_files import REWRITES, ResultsFiles  # noqa: F401, E402
from utils.report.sections import SECTIONS  # noqa: F401, E402
