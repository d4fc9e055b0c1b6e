"""The one exception every source raises for bad input.

Takes nothing; gives ``SourceError``, whose message always starts with the file
or device it is about, followed by the reason, so the CLI can print it as is.
Built either as ``SourceError(where, reason)`` (message "where: reason") or,
for callers that already composed the text, ``SourceError(message)``.
"""
from __future__ import annotations


class SourceError(Exception):
    """Bad or unreadable input: the message names the file/device and the reason."""

    def __init__(self, where: object, reason: str | None = None) -> None:
        if reason is None:
            self.where, self.reason = "", str(where)
            super().__init__(str(where))
        else:
            self.where, self.reason = str(where), reason
            super().__init__(f"{self.where}: {reason}")
