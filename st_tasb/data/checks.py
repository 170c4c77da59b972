"""Checks of the numeric arguments of the public API: type and range, with the argument named.

Example:
    >>> check_number("top_k", 10, minimum=1)
    >>> check_number("top_k", 10.5, minimum=1)
    Traceback (most recent call last):
    ...
    ValueError: top_k must be an integer, not 10.5 (float)
    >>> check_number("scale", 0.0, integer=False, minimum=0, inclusive=False)
    Traceback (most recent call last):
    ...
    ValueError: scale must be a finite number > 0, not 0.0
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def check_number(
    name: str, value: Any, *, integer: bool = True, minimum: float | None = None, inclusive: bool = True,
    optional: bool = False,
) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is a number of the right kind in range.

    Args:
        name: the argument's name, as the caller knows it.
        value: the value given.
        integer: whether it must be a whole number (numpy integers count; a bool never does).
        minimum: the lowest allowed value.
        inclusive: whether ``minimum`` itself is allowed.
        optional: whether ``None`` is allowed.
    """
    if value is None and optional:
        return
    kind = numbers.Integral if integer else numbers.Real
    bound = "" if minimum is None else f" {'>=' if inclusive else '>'} {minimum:g}"
    expected = "an integer" if integer else f"a finite number{bound}"
    if isinstance(value, bool) or not isinstance(value, kind):
        expected = "an integer" if integer else expected if bound else "a number"
        raise ValueError(f"{name} must be {expected}, not {value!r} ({type(value).__name__})")
    if (not integer and not math.isfinite(value)) or (
        minimum is not None and (value < minimum or (value == minimum and not inclusive))
    ):
        raise ValueError(f"{name} must be {expected}{bound if integer else ''}, not {value!r}")
