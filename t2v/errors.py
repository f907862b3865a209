"""The one exception for bad input.

`InputError` is what a user can fix: an unreadable or silent audio file, a photo without a
face, a corrupt record, a bad override, an output that already exists. Its message is one
line naming the file (or flag) and the problem; `t2v` prints it and exits with status 2.
Everything else is a programming error and keeps its traceback.

It subclasses ValueError so code that already catches ValueError keeps working.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input, reported to the user as one line: `<file or flag>: <problem>`."""


class MissingInput(InputError, FileNotFoundError):
    """A file or folder the user named (or one t2v needs inside it) that is not there: bad
    input, and still a FileNotFoundError for callers that fall back on a missing file."""
