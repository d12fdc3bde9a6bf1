"""Errors that reach the user as one clear line (the CLI exits 2 on them)."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the person running a command: a missing file, a malformed key,
    an out-of-range option. The message must say what was wrong and how to fix it."""
