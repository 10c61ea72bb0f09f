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


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, after the work in progress was saved; the message says what was saved and how to resume."""


def exit_on_user_error(main):
    """Decorator for CLI mains: a PadError becomes `error: <line>` on stderr per line of its message
    and exit code 2; Ctrl-C becomes one `interrupted: ...` line and exit code 130."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except PadError as err:
            for line in str(err).splitlines() or [type(err).__name__]:
                print(f"error: {line}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt as err:
            detail = str(err) if isinstance(err, Interrupted) else \
                "nothing half-written is left behind; rerun the same command to resume"
            print(f"interrupted: {detail}", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper
