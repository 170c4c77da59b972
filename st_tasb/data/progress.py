"""Whether progress bars show: the caller's ``show_progress_bar``, unless bars are off for the whole process.

``st-tasb --quiet`` (or ``TQDM_DISABLE=1`` in the environment) turns every progress bar of st-tasb off,
including those of the libraries it drives (encoding, the Trainer), whatever the callers ask for.

Example:
    >>> import os
    >>> os.environ.pop("TQDM_DISABLE", None) and None
    >>> progress_enabled(True), progress_enabled(False)
    (True, False)
    >>> os.environ["TQDM_DISABLE"] = "1"
    >>> progress_enabled(True)
    False
    >>> del os.environ["TQDM_DISABLE"]
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import tqdm.std

QUIET_VARIABLE = "TQDM_DISABLE"
"""The environment variable that switches progress bars off (tqdm reads it too)."""


def progress_enabled(show: bool = True) -> bool:
    """``show``, unless progress bars are switched off for the process."""
    return bool(show) and os.environ.get(QUIET_VARIABLE, "").lower() not in ("1", "true", "yes")


def silence_all_bars() -> Callable[[], None]:
    """Switch off every tqdm bar of the process, also those that libraries draw without a switch of their own
    (sentence-transformers' "Computing widget examples"). tqdm reads ``TQDM_DISABLE`` only when it is imported,
    which happens before a command line is parsed, so ``st-tasb --quiet`` calls this too.

    Returns:
        A function that switches them back on.

    Example:
        >>> import io
        >>> from tqdm import tqdm
        >>> restore = silence_all_bars()
        >>> stream = io.StringIO(); _ = list(tqdm(range(3), file=stream)); stream.getvalue()
        ''
        >>> restore()
    """
    original = tqdm.std.tqdm.__init__
    tqdm.std.tqdm.__init__ = functools.partialmethod(original, disable=True)  # bars of subclasses go through it

    def restore() -> None:
        tqdm.std.tqdm.__init__ = original

    return restore
