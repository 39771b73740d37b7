"""What the router's commands share about labelled text files: the error they report, and the form in
which two texts count as the same post."""

from __future__ import annotations


class DataError(ValueError):
    """A file, column or label map a command cannot use; the message says which file and column."""


def compact(text: str) -> str:
    """The text without whitespace: two posts differing only in spacing are the same post."""
    return "".join(text.split())
