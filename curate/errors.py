"""Errors a user can act on. The CLI prints them as one red line and exits with code 2."""

from __future__ import annotations


class CurateError(Exception):
    """Base of every error curate raises on purpose; its message is meant for a user."""


class InputError(CurateError):
    """An input file or folder can't be read or understood (missing, empty, undetectable format)."""


class OutputError(CurateError):
    """An output folder can't be created or written (a file in the way, no permission, read-only)."""


class ConfigError(CurateError):
    """A pipeline file or option is wrong: unknown key or stage, bad type, impossible target."""


class ConservationError(CurateError):
    """A stage lost or invented rows: rows in != rows kept + rows rejected. Always a bug in curate."""


class ServiceError(CurateError):
    """An external service (Argilla server, Redis, database) can't be started or reached."""


class RunLockedError(CurateError):
    """Another curate run holds the run folder's lock."""


# OS errors a user can fix (a path, a permission, a full or read-only disk): the CLI makes them one line and
# exit code 2, wherever in the library they surface. Anything else stays an internal error (exit 1).
USER_ERRNOS = frozenset(
    {"ENOENT", "EACCES", "EPERM", "ENOSPC", "EDQUOT", "EROFS", "ENOTDIR", "EISDIR", "EFBIG", "ENAMETOOLONG",
     "EEXIST", "ELOOP", "EMFILE", "ENFILE", "EXDEV", "ENOTEMPTY", "EBUSY", "ETXTBSY", "EIO"}
)
_WHAT = {"ENOSPC": "no space left on the device", "EDQUOT": "disk quota exceeded",
         "EROFS": "read-only file system", "EFBIG": "file too large (a file-size limit was reached)"}


def user_os_error(exc: BaseException, where: object = None) -> str | None:
    """One line saying what and where for an OS error a user can fix, else None. Also reads the
    `(os error N)` that Polars and pyarrow put in their own exception messages; `where` names the place when
    the exception doesn't."""
    import errno
    import os
    import re

    code = getattr(exc, "errno", None) if isinstance(exc, OSError) else None
    where = (getattr(exc, "filename", None) if isinstance(exc, OSError) else None) or where
    if code is None:
        m = re.search(r"\(os error (\d+)\)|\[errno (\d+)\]", str(exc), re.IGNORECASE)
        if m is None:
            return None
        code = int(m.group(1) or m.group(2))
    name = errno.errorcode.get(code, "")
    if name not in USER_ERRNOS:
        return None
    what = _WHAT.get(name) or os.strerror(code).lower()
    if where is None:
        m = re.search(r"""(?:path|file|directory)[ :=]+['"]?([^'"\s,)]+)""", str(exc))
        where = m.group(1) if m else None
    return f"{where}: {what}" if where else f"{what} ({str(exc).splitlines()[0][:200]})"
