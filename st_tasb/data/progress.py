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

import os

QUIET_VARIABLE = "TQDM_DISABLE"
"""The environment variable that switches progress bars off (tqdm reads it too)."""


def progress_enabled(show: bool = True) -> bool:
    """``show``, unless progress bars are switched off for the process."""
    return bool(show) and os.environ.get(QUIET_VARIABLE, "").lower() not in ("1", "true", "yes")
