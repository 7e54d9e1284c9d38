"""Benchmarks of the suite on the machine they run on: ``python benchmarks/run.py`` (see its docstring).

Modules (one per section, each ``measure(...)`` and ``markdown(result)``):
- ``common``: Timing, the fixed phantom stores and the device's fast precisions, shared by the sections.
- ``encoder``: Image-encoder throughput.
- ``decoder``: Mask-decoder throughput at inference and in Task 2 training.
- ``training``: Task 2 / Task 3 training steps, exact path against fast path, and the paper preset's estimate.
- ``task1``: Task 1 end to end, the suite against the naive SamPredictor loop.
- ``memory``: Peak resident memory of Task 1 and Task 2 on two store sizes.
"""
