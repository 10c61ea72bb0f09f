"""Errors that the command-line entry points turn into one clear line."""
from __future__ import annotations

import functools
import sys


class PadError(Exception):
    """Base class for user-facing errors (bad data, bad config, missing checkpoint)."""


class DataError(PadError):
    """A dataset file or folder is missing, unreadable or inconsistent. The message names the file."""


class ConfigError(PadError):
    """A configuration value is invalid or inconsistent."""


def exit_on_user_error(main):
    """Decorator for CLI mains: a PadError becomes `error: <message>` on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except PadError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
