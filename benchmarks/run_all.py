"""Run every benchmark, one after the other, each in its own process, and print their figures.

Each benchmark runs as ``python benchmarks/bench_<name>.py`` (its own process, so that one's memory does
not inflate the next one's peak) with its default, real-scale settings unless ``--quick`` is given.

    python benchmarks/run_all.py                        # real scale: about an hour on 2 cores
    python benchmarks/run_all.py --quick --json figures.json
    python benchmarks/run_all.py --only table_index epoch
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

BENCHMARKS = ("table_index", "tsv_load", "epoch", "anchor_sampler", "clustering", "training_step", "evaluation")
"""The benchmarks, ``bench_<name>.py``, in the order they run (real scale: their defaults)."""

QUICK = {
    "table_index": ["--pairs", "1e6", "--queries", "1e4", "--passages", "1e5", "--clusters", "50"],
    "tsv_load": ["--pairs", "1e6", "--queries", "1e4", "--passages", "1e5", "--clusters", "50",
                 "--baseline-lines", "2e5"],
    "epoch": ["--pairs", "1e6", "--queries", "1e4", "--passages", "1e5", "--clusters", "50"],
    "anchor_sampler": ["--anchors", "2e4", "--clusters", "100"],
    "clustering": ["--queries", "2e4", "--dim", "64", "--clusters", "100"],
    "training_step": ["--warmup", "1", "--steps", "2"],
    "evaluation": ["--max-docs", "300", "--max-seq-length", "128"],
}
"""Benchmark name -> arguments of a small run that checks the script works (figures not comparable to targets)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these benchmarks")
    parser.add_argument("--quick", action="store_true", help="tiny scale: checks the scripts, not the targets")
    parser.add_argument("--json", metavar="PATH", help="write all reports as one JSON list to PATH")
    args = parser.parse_args(argv)

    reports, failed = [], []
    with tempfile.TemporaryDirectory(prefix="st-tasb-bench-") as folder:
        for name in args.only or BENCHMARKS:
            report_path = Path(folder) / f"{name}.json"
            extra = QUICK[name] if args.quick else []
            command = [sys.executable, str(HERE / f"bench_{name}.py"), *extra, "--json", str(report_path)]
            print(f"\n$ {' '.join(command[1:-2])}", flush=True)
            status = subprocess.run(command, check=False).returncode
            if report_path.is_file():
                reports.append(json.loads(report_path.read_text()))
            if status != 0:
                failed.append(name if report_path.is_file() else f"{name} (crashed, exit {status})")

    print("\n== summary ==")
    for report in reports:
        for figure in report["figures"]:
            if figure["passed"] is not None:
                print(f"{'PASS' if figure['passed'] else 'FAIL'}  {report['benchmark']}: {figure['name']}")
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=2))
    if failed:
        print("targets missed or benchmarks crashed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
