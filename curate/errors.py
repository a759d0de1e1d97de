"""Errors a user can act on. The CLI prints them as one red line and exits with code 2."""

from __future__ import annotations


class CurateError(Exception):
    """Base of every error curate raises on purpose; its message is meant for a user."""


class InputError(CurateError):
    """An input file or folder can't be read or understood (missing, empty, undetectable format)."""


class ConfigError(CurateError):
    """A pipeline file or option is wrong: unknown key or stage, bad type, impossible target."""


class ConservationError(CurateError):
    """A stage lost or invented rows: rows in != rows kept + rows rejected. Always a bug in curate."""


class ServiceError(CurateError):
    """An external service (Argilla server, Redis, database) can't be started or reached."""
