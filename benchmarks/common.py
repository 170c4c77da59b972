"""Shared helpers of the benchmark scripts: timing, peak memory, the printed report and its JSON form.

Every ``bench_*.py`` script measures phases with :func:`measure`, collects :class:`Figure` rows in a
:class:`Report`, prints the report as a table and, with ``--json PATH``, writes it as JSON (which
``run_all.py`` gathers).

Memory: RSS is read from ``/proc/self`` (Linux). A phase's peak is the process high-water mark
(``VmHWM``) after resetting it at the start of the phase (``/proc/self/clear_refs``), so short spikes
are caught; where that reset is not allowed, a thread samples RSS every few milliseconds instead.
Peaks are reported above the RSS measured just before the phase.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

GB = 1 << 30
MB = 1 << 20


def rss_bytes() -> int:
    """The current resident set size of this process."""
    return psutil.Process().memory_info().rss


def _hwm_bytes() -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _cpu_seconds() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


@dataclass
class Phase:
    """What :func:`measure` recorded: wall and CPU seconds, RSS before, and the peak RSS above it (bytes).

    CPU seconds (user + system, all threads of this process) tell how much of the wall time the
    process actually ran: on a machine shared with other work, ``cpu_seconds / threads`` estimates
    the wall time the phase would take alone.
    """

    name: str
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    rss_before: int = 0
    peak_above: int = 0
    anonymous_peak_above: int | None = None


def anonymous_bytes() -> int:
    """Resident anonymous memory (``RssAnon``): RSS without the pages of memory-mapped files, which the
    kernel can drop and reread, so they are not memory the process holds on to."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise OSError("no RssAnon in /proc/self/status")


class _RssSampler(threading.Thread):
    def __init__(self, read=rss_bytes, interval: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.read = read
        self.interval = interval
        self.peak = read()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, self.read())
            time.sleep(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, self.read())


@contextmanager
def measure(name: str, anonymous: bool = False) -> Iterator[Phase]:
    """Time the block and record its peak RSS above the RSS at its start.

    With ``anonymous``, also sample the peak of anonymous memory (:func:`anonymous_bytes`) above its start.

    Example:
        >>> with measure("allocate") as phase:
        ...     block = bytearray(50 * MB)
        >>> phase.peak_above >= 40 * MB and phase.seconds > 0
        True
    """
    phase = Phase(name, rss_before=rss_bytes())
    exact = _reset_hwm()
    sampler = None if exact else _RssSampler()
    if sampler is not None:
        sampler.start()
    anonymous_before = anonymous_bytes() if anonymous else 0
    anonymous_sampler = _RssSampler(anonymous_bytes) if anonymous else None
    if anonymous_sampler is not None:
        anonymous_sampler.start()
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    try:
        yield phase
    finally:
        phase.seconds = time.perf_counter() - start
        phase.cpu_seconds = _cpu_seconds() - cpu_start
        peak = (_hwm_bytes() or rss_bytes()) if sampler is None else sampler.stop()
        phase.peak_above = max(0, peak - phase.rss_before)
        if anonymous_sampler is not None:
            phase.anonymous_peak_above = max(0, anonymous_sampler.stop() - anonymous_before)


@dataclass
class Figure:
    """One line of a report.

    Attributes:
        name: what was measured.
        value: the measured figure.
        unit: its unit (``s``, ``GB``, ``samples/s``, ...).
        target: the target as text (``"<= 30 s"``), empty when the figure is informative only.
        passed: whether the target is met (``None`` without a target).
        baseline: the baseline's figure measured in the same run, when there is one.
        ratio: ``value / baseline``.
        note: anything a reader needs (extrapolation, what the baseline is).
    """

    name: str
    value: float
    unit: str
    target: str = ""
    passed: bool | None = None
    baseline: float | None = None
    ratio: float | None = None
    note: str = ""


@dataclass
class Report:
    """The figures of one benchmark run, with the settings and the machine they were measured on."""

    benchmark: str
    settings: dict[str, Any]
    figures: list[Figure] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=lambda: machine_info())

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def target(self, name: str, value: float, unit: str, limit: float, *, baseline: float | None = None,
               note: str = "") -> Figure:
        """Add a figure whose target is ``value <= limit``."""
        ratio = value / baseline if baseline else None
        return self.add(Figure(name, value, unit, f"<= {limit:g} {unit}", value <= limit, baseline, ratio, note))

    @property
    def passed(self) -> bool:
        """Whether every figure with a target met it."""
        return all(f.passed for f in self.figures if f.passed is not None)

    def render(self) -> str:
        """The report as a plain-text table."""
        lines = [f"== {self.benchmark} ==", "settings: " + ", ".join(f"{k}={v}" for k, v in self.settings.items())]
        lines.append(
            "machine: {cpus} CPUs, {memory_gb:.0f} GB, load average {load_average} at start, {device}, {date}".format(
                **self.machine
            )
        )
        if self.phases:
            lines.append("")
            lines.append(f"{'phase':<44}{'wall s':>10}{'CPU s':>10}{'peak RSS above start':>24}")
            for phase in self.phases:
                lines.append(
                    f"{phase.name:<44}{phase.seconds:>10.2f}{phase.cpu_seconds:>10.2f}{phase.peak_above / GB:>21.2f} GB"
                )
        header = f"{'figure':<44}{'value':>14}  {'target':<20}{'result':<8}{'baseline':>14}{'ratio':>9}"
        lines += ["", header, "-" * len(header)]
        for f in self.figures:
            result = "" if f.passed is None else ("PASS" if f.passed else "FAIL")
            baseline = "" if f.baseline is None else _format(f.baseline, f.unit)
            ratio = "" if f.ratio is None else f"{f.ratio:.3g}"
            lines.append(f"{f.name:<44}{_format(f.value, f.unit):>14}  {f.target:<20}{result:<8}{baseline:>14}{ratio:>9}")
            if f.note:
                lines.append(f"    {f.note}")
        for note in self.notes:
            lines.append(f"note: {note}")
        verdict = "all targets met" if self.passed else "TARGET MISSED: " + ", ".join(
            f.name for f in self.figures if f.passed is False
        )
        lines.append(verdict)
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def finish(self, json_path: str | None) -> int:
        """Print the report, write it as JSON when asked; return the process exit status (0: all met)."""
        print(self.render(), flush=True)
        if json_path:
            Path(json_path).write_text(json.dumps(self.to_json(), indent=2))
        return 0 if self.passed else 1


def _format(value: float, unit: str) -> str:
    text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return f"{text} {unit}"


def machine_info() -> dict[str, Any]:
    """CPU count, memory, load average (other work on the machine skews timings), device and date."""
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return {
        "cpus": os.cpu_count(),
        "memory_gb": psutil.virtual_memory().total / GB,
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "device": device,
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def quiet_libraries() -> None:
    """Silence the progress bars and info logs of transformers and datasets (they clutter the reports)."""
    import datasets
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark shares (``--json``)."""
    result = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    result.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    quiet_libraries()
    return result


def timed(command: list[str], log: Path) -> dict[str, float]:
    """Run ``command`` offline (its output appended to ``log``), failing loudly; its wall seconds and the peak
    resident memory of the process in GB (the experiments run every step as a user would: a command)."""
    start = time.monotonic()
    with log.open("a") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed ({os.waitstatus_to_exitcode(status)}): {' '.join(command)}; see {log}")
    return {"seconds": time.monotonic() - start, "peak_rss_gb": usage.ru_maxrss / 2**20}


def last_json(log: Path) -> dict:
    """The last JSON object printed on a line of its own in ``log`` (``st-tasb evaluate --json``'s metrics)."""
    return json.loads(next(line for line in reversed(log.read_text().splitlines()) if line.startswith("{")))
