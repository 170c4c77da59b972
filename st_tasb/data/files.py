"""Reading the files st-tasb writes and reads, with errors that name the file.

A library that fails on a corrupt or truncated file (pyarrow, numpy, json, ``datasets``) names the byte or
the field it choked on, but not the file. :func:`reading` re-raises such an error as a
:class:`CorruptFileError` that names the file and what it should hold; a missing file stays a
``FileNotFoundError``.

Example:
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "settings.json"
    >>> _ = path.write_text('{"k": ')
    >>> with reading(path, "clustering settings file"):
    ...     _ = json.loads(path.read_text())
    Traceback (most recent call last):
    ...
    st_tasb.data.files.CorruptFileError: .../settings.json: cannot read this clustering settings file (JSONDecodeError: Expecting value: line 1 column 7 (char 6)); it is corrupt or truncated: write it again
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class CorruptFileError(ValueError):
    """A file exists but cannot be read as what it should be; the message names it."""


@contextmanager
def reading(path: str | Path, what: str) -> Iterator[None]:
    """Within the block, turn a library's error on ``path`` into a :class:`CorruptFileError` naming the file.

    Args:
        path: the file (or folder) being read.
        what: what it should hold, e.g. ``"teacher score table"``.
    """
    try:
        yield
    except (FileNotFoundError, CorruptFileError):
        raise
    except (ValueError, OSError, EOFError, KeyError, TypeError) as error:
        reason = " ".join(str(error).split()) or "no detail"
        raise CorruptFileError(
            f"{path}: cannot read this {what} ({type(error).__name__}: {reason}); it is corrupt or truncated: write it again"
        ) from error


__all__ = ["CorruptFileError", "reading"]
