"""Shared pieces of the sam-btcv experiment suite, one subpackage per pipeline stage; each subpackage's
``__init__`` lists its modules and re-exports their public names. Scripts import from here, never the
other way round.

Packages:
- ``core``: Foundations: atomic files, checkpoints and their kinds, hashing, errors, seeding, device, torchrun, organs.
- ``data``: BTCV on disk, the phantom, the slice store, the one (slice, organ) sample list, augmentation, NIfTI export.
- ``embeddings``: The image encoder's outputs, once per slice: keyed storage, encoding, the cache's read interface.
- ``models``: The networks: the SAM family with its preprocessing, and the U-Net baselines.
- ``inference``: Prompts into masks: prompts, the one cache decoder, clicks, rounds, propagation, naming, classes.
- ``eval``: Metrics, one per module, and the scoring loops (Task 1, sessions, the 3-D protocols, the baselines).
- ``train``: The one training loop, its fast path, each task's step, Task 2's inputs.
- ``report``: Tables, figures and the report's sections.
- ``scaffold``: What every script stands on: flags, session, evaluation and training scaffolds, runs, results, errors.
"""
