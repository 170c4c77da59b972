"""Run the st-tasb command line and kill this process with SIGKILL at a chosen point (for tests of crash safety).

Usage: python kill_at.py MODULE:NAME CALL WHEN -- ST-TASB ARGUMENTS...

``NAME`` (a function of ``MODULE``, or ``Class.method``) is wrapped: its ``CALL``-th call (1 = the first) kills
the process ``before`` it runs or ``after`` it returns, as the OOM killer or a pre-empted node would: no
exception, no cleanup, no ``finally``.
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys


def arm(target: str, call: int, when: str) -> None:
    module_name, _, name = target.partition(":")
    owner = importlib.import_module(module_name)
    *path, attribute = name.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, attribute)
    calls = 0

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == call and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if calls == call and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, attribute, wrapper)


if __name__ == "__main__":
    target, call, when, separator, *arguments = sys.argv[1:]
    assert separator == "--" and when in ("before", "after"), __doc__
    arm(target, int(call), when)
    from st_tasb.cli import main

    sys.exit(main(arguments))
