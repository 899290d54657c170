"""Exceptions with messages meant for people.

Every error a user can cause (a bad file, a bad box, missing weights) is raised as a
:class:`MedsamkitError`. The CLI prints its message on one line and exits non-zero, with no
traceback, so each message must say *which* file or value is wrong and *what* is wrong.
"""

from __future__ import annotations

from os import PathLike


class MedsamkitError(Exception):
    """Base class of every error medsamkit raises on purpose."""


class InputError(MedsamkitError):
    """An input file or value cannot be used; the message names it and the problem."""

    def __init__(self, source: str | PathLike | None, problem: str) -> None:
        self.source = None if source is None else str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}" if self.source else problem)


class CheckpointError(MedsamkitError):
    """A checkpoint file cannot be read or does not fit the model."""


class WeightsUnavailableError(MedsamkitError):
    """Model weights are neither on disk nor downloadable (for example offline)."""
