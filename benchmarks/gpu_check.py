"""GPU check: TAS-B training throughput, peak memory and in-batch teacher share on one CUDA GPU, in one command.

Runs ``bench_training_step.py`` on synthetic data (random words of the BERT vocabulary; nothing is downloaded
or read from ``../shared``) with a randomly initialised student of the paper's shape (DistilBERT-base, CLS
pooling, 200 tokens) in bf16, TAS-B (``TopicAwareBalancedBatchSampler`` + ``DualTeacherMarginMSELoss``) against
plain ``MarginMSELoss`` at the same batch size, steps alternating between the two:

- b = 32 and 128 with the cached bi-encoder teacher, and with a ColBERT teacher of the paper's size (random
  weights: speed does not depend on them);
- b = 256 with GradCache (``CachedDualTeacherMarginMSELoss``, mini-batches of 64), both teachers.

Each run prints its table; everything is written to ``--output`` (JSON: per run, steps/s of both configurations,
peak GPU memory, the share of the TAS-B step spent in the teacher). A run is skipped, and said so, when the time
left of ``--budget`` seconds is too short for it. ``--cpu-smoke`` runs the same path on the CPU with a 2-layer
MiniLM student, one batch size of 4 with GradCache and one timed step (seconds; the test suite runs it).

    python benchmarks/gpu_check.py --output gpu_check.json                 # about 6 minutes on one GPU
    python benchmarks/gpu_check.py --cpu-smoke --output smoke.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import bench_training_step
import torch

RUNS = [  # (teacher, batch sizes, GradCache mini-batch)
    ("cached", [32, 128], None),
    ("colbert", [32, 128], None),
    ("cached", [256], 64),
    ("colbert", [256], 64),
]
SMOKE_RUNS = [("cached", [4], 2)]  # the GradCache loss path with the cached teacher
SECONDS_PER_RUN = 75  # about what one run above takes on an H100-class GPU; runs are skipped past the budget


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="gpu_check.json", help="JSON file of all runs")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for all runs (a run is skipped past it)")
    parser.add_argument("--steps", type=int, default=15, help="timed steps per configuration and batch size")
    parser.add_argument("--cpu-smoke", action="store_true", help="the same path on the CPU, tiny, in seconds")
    args = parser.parse_args(argv)
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here; run it on a GPU machine, or with --cpu-smoke", file=sys.stderr)
        return 2
    started = time.perf_counter()
    record: dict = {"device": torch.cuda.get_device_name(0) if not args.cpu_smoke else "cpu (smoke)",
                    "torch": torch.__version__, "runs": [], "skipped": []}
    for teacher, batch_sizes, gradcache in SMOKE_RUNS if args.cpu_smoke else RUNS:
        name = f"{teacher} teacher, b={batch_sizes}" + (f", GradCache {gradcache}" if gradcache else "")
        elapsed = time.perf_counter() - started
        if not args.cpu_smoke and elapsed + SECONDS_PER_RUN > args.budget:
            record["skipped"].append(f"{name}: {elapsed:.0f} s of the {args.budget:.0f} s budget used")
            continue
        with tempfile.NamedTemporaryFile(suffix=".json") as report:
            argv_run = ["--teacher", teacher, "--triples", "synthetic", "--batch-sizes", *map(str, batch_sizes),
                        "--json", report.name]
            if args.cpu_smoke:
                argv_run += ["--device", "cpu", "--student", "minilm-2l", "--steps", "1", "--warmup", "1"]
            else:
                argv_run += ["--device", "cuda", "--student", "distilbert-base", "--precision", "bf16",
                             "--steps", str(args.steps), "--warmup", "2"]
            if gradcache:
                argv_run += ["--gradcache", str(gradcache)]
            print(f"\n== {name}", flush=True)
            start = time.perf_counter()
            bench_training_step.main(argv_run)
            run = json.loads(Path(report.name).read_text())
        record["runs"].append({"name": name, "seconds": time.perf_counter() - start, "report": run})
    record["seconds"] = time.perf_counter() - started
    Path(args.output).write_text(json.dumps(record, indent=2))
    print(f"\ngpu_check: {len(record['runs'])} runs in {record['seconds']:.0f} s -> {args.output}"
          + (f"; skipped: {record['skipped']}" if record["skipped"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
