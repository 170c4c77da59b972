"""The GPU check, ready to run: its --cpu-smoke mode takes the same path (synthetic data, TAS-B against MarginMSELoss,
GradCache, the teacher's share of the step) on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_gpu_check_cpu_smoke_writes_its_figures(tmp_path: Path) -> None:
    output = tmp_path / "smoke.json"
    result = subprocess.run([sys.executable, "gpu_check.py", "--cpu-smoke", "--output", str(output)], cwd=BENCHMARKS,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(output.read_text())
    assert [run["name"] for run in record["runs"]] == ["cached teacher, b=[4], GradCache 2"]
    figures = {figure["name"]: figure for figure in record["runs"][0]["report"]["figures"]}
    throughput = next(figure for name, figure in figures.items() if name.endswith("TAS-B throughput"))
    share = next(figure for name, figure in figures.items() if "share of TAS-B step in the cached teacher" in name)
    assert throughput["value"] > 0 and throughput["baseline"] > 0 and 0 < share["value"] < 100


def test_gpu_check_refuses_to_run_without_a_gpu_unless_smoke(tmp_path: Path) -> None:
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("on a GPU machine the full check runs: nothing to refuse")
    result = subprocess.run([sys.executable, "gpu_check.py", "--output", str(tmp_path / "x.json")], cwd=BENCHMARKS,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "no CUDA GPU here" in result.stderr
