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

import glob
import json
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from st_tasb.data.text_files import DataFormatError


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
    except (FileNotFoundError, CorruptFileError, DataFormatError):  # a DataFormatError names the file and what is wrong
        raise
    except PermissionError as error:
        raise PermissionError(f"{path}: cannot read this {what}: permission denied ({error.filename or path})") from error
    except (ValueError, OSError, EOFError, KeyError, TypeError) as error:
        reason = " ".join(str(error).split()) or "no detail"
        raise CorruptFileError(
            f"{path}: cannot read this {what} ({type(error).__name__}: {reason}); it is corrupt or truncated: write it again"
        ) from error


def check_writable(path: str | Path, what: str, *, named: bool = True) -> None:
    """Fail now, not after the work, if ``path`` (a folder, or the folder of an output file) cannot be created or
    written.

    Args:
        path: the folder.
        what: what it is, for the message (e.g. ``"--output"``).
        named: the message names ``path`` after ``what`` (off when ``what`` names it already).

    Raises:
        PermissionError: naming ``what`` and the folder, when the first part of its path that exists is a file
            or is not writable.

    Example:
        >>> import tempfile
        >>> blocker = Path(tempfile.mkdtemp()) / "a-file"
        >>> _ = blocker.write_text("x")
        >>> check_writable(blocker / "output", "--output")
        Traceback (most recent call last):
        ...
        PermissionError: --output .../a-file/output cannot be written: .../a-file is a file, not a folder
    """
    path = Path(path)
    existing = next(part for part in (path, *path.parents) if part.exists())
    what = f"{what} {path}" if named else what
    if not existing.is_dir():
        raise PermissionError(f"{what} cannot be written: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} cannot be written: no write permission in {existing}")


def check_output(path: str | Path, what: str, *, record: str | None = None, file: bool = False,
                 overwrite: bool = False) -> None:
    """Check an output path before any work: the one check of every command's output (a folder, or with ``file`` a
    file), so that nothing fails after the work for a reason known before it, and nothing of the user's is replaced.

    - Its place can be written (:func:`check_writable`): the first part of its path that exists is a writable folder.
    - A file output must not be a folder, nor an existing file unless ``overwrite``.
    - A folder output must not be a file. With ``record``, the file the command writes into every output folder it
      fills, a folder holding entries but not ``record`` (a folder of your files, or files where the command would
      write its own) is refused unless ``overwrite``; a folder holding ``record`` is the command's own, whose files it
      may replace.

    Args:
        path: the output (it need not exist).
        what: the option naming it, for the message (e.g. ``"--output"``).
        record: the record file of the command's output folders, if it keeps one.
        file: the output is a file, not a folder.
        overwrite: allow replacing what is there (``--overwrite``).

    Raises:
        PermissionError: when its place cannot be written (naming the file in the way, or the folder).
        IsADirectoryError, NotADirectoryError: a folder where a file goes, or the reverse.
        FileExistsError: naming the file, or the folder and a few of its entries, and the way out.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "notes.txt").write_text("mine")
        >>> check_output(folder, "--output", record="mining.json")
        Traceback (most recent call last):
        ...
        FileExistsError: --output .../ holds files that st-tasb did not write (notes.txt), which would be replaced or mixed with its own: choose an empty or new folder, or add --overwrite
        >>> check_output(folder / "notes.txt", "--run-output", file=True)
        Traceback (most recent call last):
        ...
        FileExistsError: --run-output .../notes.txt exists; choose a new file or add --overwrite
    """
    path = Path(path)
    check_writable(path.parent if file else path, f"{what} {path}", named=False)
    if file:
        if path.is_dir():
            raise IsADirectoryError(f"{what} {path} is a folder: give the path of a file")
        if path.exists() and not overwrite:
            raise FileExistsError(f"{what} {path} exists; choose a new file or add --overwrite")
        return
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{what} {path} is a file: give the path of a folder")
    if record is None or overwrite or not path.is_dir() or (path / record).exists():
        return
    entries = sorted(entry.name for entry in path.iterdir())
    if entries:
        shown = ", ".join(entries[:5]) + (f", ... ({len(entries)} entries)" if len(entries) > 5 else "")
        raise FileExistsError(
            f"{what} {path}/ holds files that st-tasb did not write ({shown}), which would be replaced or mixed with "
            "its own: choose an empty or new folder, or add --overwrite"
        )


@contextmanager
def writing(path: str | Path, what: str) -> Iterator[None]:
    """Within the block, turn an error of the operating system while writing ``path`` (a full disk, a lost mount)
    into one that names ``path`` and ``what`` it was to hold.

    Example:
        >>> import errno
        >>> with writing("out/shard-00001.parquet", "scoring shard"):
        ...     raise OSError(errno.ENOSPC, "No space left on device")
        Traceback (most recent call last):
        ...
        OSError: [Errno 28] out/shard-00001.parquet: cannot write this scoring shard (No space left on device)
    """
    try:
        yield
    except OSError as error:
        raise OSError(error.errno, f"{path}: cannot write this {what} ({error.strerror or error})") from error


def write_json(path: str | Path, value: object, *, default: Callable[[object], object] | None = None) -> None:
    """Write ``value`` as indented JSON (UTF-8, a final newline) to ``path``, creating its folder.

    Args:
        path: the file to write.
        value: anything :func:`json.dumps` takes.
        default: how to write values JSON has no type for (e.g. ``str``), as :func:`json.dumps`'s ``default``.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "run" / "metrics.json"
        >>> write_json(path, {"ndcg@10": 0.5, "folder": Path("model")}, default=str)
        >>> print(path.read_text(), end="")
        {
          "ndcg@10": 0.5,
          "folder": "model"
        }
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, default=default) + "\n", encoding="utf-8")


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Write a file under a temporary name beside ``path`` and give it ``path``'s name only when the block succeeds.

    A crash, a full disk or an error inside the block never leaves a half-written file under ``path`` (nor
    replaces an earlier one): the temporary file is removed on an error, and a killed process leaves only a
    ``.NAME.partial-PID`` file, which no reader takes for ``path`` and the next write of ``path`` removes. An error
    of the operating system that names the temporary file names ``path`` instead.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "run.trec"
        >>> with replacing(target) as partial:
        ...     _ = partial.write_text("q1 Q0 d1 1 2.0 st-tasb\\n")
        >>> target.read_text()[:2], sorted(p.name for p in target.parent.iterdir())
        ('q1', ['run.trec'])
    """
    path = Path(path)
    partial = _partial(path)
    try:
        yield partial
        os.replace(partial, path)
    except OSError as error:
        if error.filename != str(partial):
            raise
        raise type(error)(error.errno, error.strerror, str(path)) from error  # the file asked for, not its temporary name
    finally:
        partial.unlink(missing_ok=True)


@contextmanager
def replacing_folder(path: str | Path, last: str | None = None) -> Iterator[Path]:
    """Fill a folder under a temporary name beside ``path``, and move it to ``path`` only when the block succeeds.

    A new or empty ``path`` is replaced by the whole folder at once (a rename); into a folder that holds files,
    the entries are moved one by one, ``last`` (e.g. the record that marks the folder as complete) after all the
    others, and the folder's other entries stay. An error removes the temporary folder; a killed process leaves
    a ``.NAME.partial-PID`` folder, which no reader takes for ``path`` and the next write of ``path`` removes.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "table"
        >>> with replacing_folder(target, last="done.json") as partial:
        ...     _ = (partial / "data.arrow").write_text("rows")
        ...     _ = (partial / "done.json").write_text("{}")
        >>> sorted(p.name for p in target.iterdir()), sorted(p.name for p in target.parent.iterdir())
        (['data.arrow', 'done.json'], ['table'])
    """
    path = Path(path)
    partial = _partial(path)
    try:
        partial.mkdir()
        yield partial
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        if not path.exists():
            os.replace(partial, path)
            return
        for entry in sorted(partial.iterdir(), key=lambda entry: entry.name == last):
            target = path / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(entry, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


LOCK_FILE = ".st-tasb.lock"
"""The file :func:`locked` keeps in a folder while a process works in it."""


class FolderInUseError(OSError):
    """Another running st-tasb process works in the folder; the message names it (pid, host, start time)."""


@contextmanager
def locked(folder: str | Path, what: str) -> Iterator[None]:
    """Within the block, hold the lock of ``folder``: a second process that asks for it is refused, naming the first.

    The lock is the file ``LOCK_FILE`` in the folder, created exclusively and holding the holder's pid, host and start
    time; it is removed when the block ends. A lock left by a process of this host that no longer runs (killed, or
    the machine restarted) is taken over. A lock of another host (a shared file system) cannot be checked: it is
    refused, and the message says which file to remove if that process is gone.

    Raises:
        FolderInUseError: naming the folder and the process that holds it.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> with locked(folder, "scoring work folder"):
        ...     with locked(folder, "scoring work folder"):
        ...         pass
        Traceback (most recent call last):
        ...
        st_tasb.data.files.FolderInUseError: scoring work folder .../ is in use by st-tasb process ... on ... since ...: wait for it to finish (or remove .../.st-tasb.lock if that process is gone)
        >>> (folder / LOCK_FILE).exists()
        False
    """
    path = Path(folder) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    while not _create_lock(path, holder):
        other = _lock_holder(path)
        if other is not None and (other["host"] != holder["host"] or _running(int(other["pid"]))):
            raise FolderInUseError(
                f"{what} {path.parent}/ is in use by st-tasb process {other['pid']} on {other['host']} since "
                f"{other.get('started')}: wait for it to finish (or remove {path} if that process is gone)"
            )
        stale = path.with_name(f"{LOCK_FILE}.stale-{os.getpid()}")
        try:  # take the stale lock over; a process that took it over first has put its own lock there: give it back
            os.replace(path, stale)
        except FileNotFoundError:
            continue
        if _lock_holder(stale) != other:
            _create_lock(path, _lock_holder(stale) or {})
        stale.unlink()
    try:
        yield
    finally:
        if _lock_holder(path) == holder:
            path.unlink(missing_ok=True)


def _create_lock(path: Path, holder: dict) -> bool:
    """Create the lock file holding ``holder`` in one step (a link to a complete file); ``False`` if it exists."""
    written = path.with_name(f"{LOCK_FILE}.{os.getpid()}")
    written.write_text(json.dumps(holder), encoding="utf-8")
    try:
        os.link(written, path)
        return True
    except FileExistsError:
        return False
    finally:
        written.unlink()


def _lock_holder(path: Path) -> dict | None:
    """The holder recorded in a lock file; ``None`` for a file that is gone, unreadable or half written (stale)."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) and str(holder.get("pid", "")).isdigit() else None


def _partial(path: Path) -> Path:
    """The temporary name of this process for ``path``, after removing those left by processes that were killed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.partial-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _running(int(pid)):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


__all__ = [
    "LOCK_FILE", "CorruptFileError", "FolderInUseError", "check_output", "check_writable", "locked", "reading",
    "replacing", "replacing_folder", "writing",
]
