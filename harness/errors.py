"""The one error type for bad user input; the CLI turns it into one line and exit code 2."""


class BadInput(Exception):
    """Bad input from the user (file, flag, card, data). The message is shown as one line."""


# errno values of faults in the user's environment rather than in the code: a full disk, a read-only
# or forbidden place. They are reported like bad input (one line, exit 2), not as a failed run.
_ENVIRONMENT_ERRNOS = {"ENOSPC": "the disk is full", "EDQUOT": "the disk quota is exceeded",
                       "EROFS": "read-only file system", "EACCES": "permission denied",
                       "EPERM": "operation not permitted"}


def environment_fault(e: BaseException) -> str | None:
    """What went wrong, for an OSError caused by the environment (full disk, read-only place); else None."""
    import errno

    if not isinstance(e, OSError):
        return None
    if e.errno is None:   # numpy's tofile on a full disk: "N requested and M written"
        return "cannot write (the disk is full)" if "requested and" in str(e) else None
    name = errno.errorcode.get(e.errno, "")
    return f"cannot write ({_ENVIRONMENT_ERRNOS[name]})" if name in _ENVIRONMENT_ERRNOS else None
