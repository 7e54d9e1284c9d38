"""The suite's own errors: conditions a user can fix, each message naming the file and the fix.

Every error the suite raises on purpose derives from :class:`SuiteError`; the scripts' one error
boundary (:func:`utils.scaffold.boundary.run_script`) prints such an error as one ``error: ...`` line
and exits 1, where any other exception is a bug and keeps its traceback. Each subclass also keeps
the built-in base it always had (``DataError`` is a ``ValueError``, ``CheckpointError`` a
``FileNotFoundError``, ...), so ``except`` clauses written against those still catch them.

Where each lives: ``DataError`` (:mod:`utils.data.dataset`), ``CacheError``
(:mod:`utils.embeddings.storage`), ``RunMismatch`` (:mod:`utils.scaffold.runs`), ``TrainingDiverged``
(:mod:`utils.train.loop`); ``CheckpointError`` and ``ResultsError`` here, since the checkpoint and
results readers of every stage raise them.
"""
from __future__ import annotations


class SuiteError(Exception):
    """A condition the user can fix (bad data, cache, checkpoint, run or results file); the message says how."""


class CheckpointError(SuiteError, FileNotFoundError):
    """A missing, unreadable or mismatched checkpoint, or one of the wrong kind; the message names the file,
    what it is, what was expected and where to get the right one."""


class ResultsError(SuiteError, ValueError):
    """A damaged or unreadable results file; the message names the file and the command that rewrites it."""


class OutputError(SuiteError, ValueError):
    """An output path a run must not or cannot write (it is an input, its parent is a file, its folder is
    read-only); raised before any work, the message names the flag and the fix."""
