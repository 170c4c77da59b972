"""benchmarks/seed_comparison.py, the statistics of every seeded comparison: paired differences over seeds, and the
pooled test and confidence interval over queries, on runs whose per-query scores are known by construction."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from st_tasb.data.runs import write_trec_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from seed_comparison import SeededRuns, paired_tests  # noqa: E402


def test_paired_tests_over_seeds_and_pooled_queries(tmp_path: Path) -> None:
    """Guards the figures the experiments report: 40 queries, one relevant passage each. The reference ranks it first
    for every query (nDCG@10 = 1); the variant ranks it first for the first 30 queries with seed 0 and the first 20
    with seed 1, and outside its top 10 otherwise (nDCG@10 = 0). Per-seed differences -0.25 and -0.5; pooled over the
    80 (seed, query) pairs the mean difference is -0.375 with the t interval of scipy around it, and Fisher's test
    finds it."""
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(40)}
    runs = SeededRuns({}, {})
    for seed, hits in ((0, 30), (1, 20)):
        for name, found in (("reference", 40), ("variant", hits)):
            run = {f"q{i}": {f"d{i}" if i < found else f"x{i}": 1.0} for i in range(40)}
            path = tmp_path / f"{name}-{seed}.trec"
            write_trec_run(run, path, tag=name)
            runs.add(name, seed, {"ndcg@10": found / 40}, path)
    result = paired_tests(runs, "reference", "variant", [0, 1], qrels)
    assert result["per_seed"] == pytest.approx([-0.25, -0.5])
    assert result["mean_difference"] == pytest.approx(-0.375)
    low, high = result["queries_pooled_ci95"]
    half_width = 1.990 * (0.375 * 0.625 / 79) ** 0.5  # t(79) quantile x the sample sd / sqrt(80), by hand
    assert low == pytest.approx(-0.375 - half_width, abs=2e-3) and high == pytest.approx(-0.375 + half_width, abs=2e-3)
    assert result["queries_pooled_p"] < 0.001 and all(p < 0.01 for p in result["queries_per_seed_p"])
