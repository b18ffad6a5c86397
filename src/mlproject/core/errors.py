"""The project's error types: what a command prints as `error: <message>` (see core/cli.py).

Raise a subclass of ProjectError for anything a user can act on (a bad file, key, setting or
state); the message names the file, key or field and says what to do. Its `exit_code` is what the
command exits with: 1 for an error, 2 for a usage error (a bad argument or setting).
"""

from __future__ import annotations


class ProjectError(Exception):
    """An error a user can act on; its message is printed as `error: <message>`."""

    exit_code = 1


class UsageError(ProjectError):
    """The command was called wrongly (unknown subcommand, malformed argument)."""

    exit_code = 2


class SettingsError(ProjectError, ValueError):
    """A setting (environment variable or params.yaml key) is invalid; the message names it."""
