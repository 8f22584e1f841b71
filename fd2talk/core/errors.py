"""The one error type the model commands turn into a message and exit status 2.

Raised for problems the user can fix (a missing file, a shard without a needed field, dims
that disagree with a checkpoint, an empty split); the message says what to do. Anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's inputs or settings; the message says how to fix it."""
