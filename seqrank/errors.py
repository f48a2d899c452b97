"""Errors a user can fix themselves (a path, an input, a port); the CLI prints their message alone."""

from __future__ import annotations


class UserError(Exception):
    """A problem with what the user asked for, not a bug: the message says what to pass instead.

    The `seqrank` CLI turns it into one `Error: ...` line and exit code 1, without a traceback
    (`--log-level DEBUG` keeps the traceback).
    """


class InputError(UserError, ValueError):
    """Inputs that cannot be read as asked: no inputs, a folder ingest cannot tell the layout of."""


class InputNotFoundError(InputError, FileNotFoundError):
    """An input path or glob that matches no file."""


class PortInUseError(UserError, OSError):
    """The address the service should listen on is taken by another process."""
