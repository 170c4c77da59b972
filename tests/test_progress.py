"""Progress bars that move (a step per chunk of real size, with an ETA), and `st-tasb --quiet` that silences them."""

from __future__ import annotations

import os

import numpy as np
import pytest
from tqdm.auto import tqdm

from st_tasb.cli import main
from st_tasb.data.texts import TextStore
from st_tasb.retrieval import search as search_module
from st_tasb.retrieval.search import search
from st_tasb.teachers import BiEncoderTeacher
from st_tasb.teachers import bi_encoder as bi_encoder_module


class RecordingBar(tqdm):
    """A tqdm bar that records every step it is moved by."""

    steps: list[tuple[str, int]] = []

    def update(self, n: float | None = 1) -> bool | None:
        if not self.disable:
            RecordingBar.steps.append((self.desc, int(n)))
        return super().update(n)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    RecordingBar.steps = []
    monkeypatch.setattr(bi_encoder_module, "tqdm", RecordingBar)
    monkeypatch.setattr(search_module, "tqdm", RecordingBar)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    return RecordingBar.steps


def test_teacher_cache_bar_moves_per_chunk(small_student, recorded) -> None:
    """Guards granular progress: encoding 10 texts in chunks of 4 moves the bar by 4, 4, 2 per store (the demo's
    bar showed 0/1 for two minutes before)."""
    store = TextStore.from_records([(str(i), f"text number {i}") for i in range(10)], name="texts")
    BiEncoderTeacher(small_student, device="cpu").build_cache(store, store, chunk_size=4)
    assert recorded == [("Encoding texts", 4), ("Encoding texts", 4), ("Encoding texts", 2)] * 2


def test_search_bar_moves_within_the_corpus_and_quiet_silences_it(
    small_student, recorded, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Guards the corpus-encoding bar of search (steps of 16 batches, not one step per 50,000-passage chunk) and
    the process-wide switch that --quiet sets."""
    corpus = TextStore.from_records([(str(i), f"passage {i}") for i in range(40)], name="corpus")
    queries = TextStore.from_records([("q", "passage 3")], name="queries")
    search(small_student, corpus, queries, top_k=5, batch_size=2)
    assert [n for desc, n in recorded if desc == "Encoding corpus"] == [32, 8]
    capsys.readouterr()
    monkeypatch.setenv("TQDM_DISABLE", "1")
    hits = search(small_student, corpus, queries, top_k=5, batch_size=2)
    assert "Encoding corpus" not in capsys.readouterr().err and np.all(hits.positions >= 0)


def test_cli_quiet_flag(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards `st-tasb --quiet COMMAND`: accepted before the command, it switches bars off for the process, also the
    bars libraries draw without a switch (tqdm read TQDM_DISABLE at import, before the flag was parsed)."""
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d1 1 1.0 t\n")
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("q1\t0\td1\t1\n")
    import io

    import tqdm.std

    drawing = tqdm.std.tqdm.__init__
    assert main(["--quiet", "evaluate", "--run", str(run), "--qrels", str(qrels), "--json"]) == 0
    assert os.environ["TQDM_DISABLE"] == "1"
    stream = io.StringIO()  # a library's own bar, drawn without a switch of ours (as sentence-transformers' widget bar)
    list(tqdm.std.tqdm(range(3), desc="Computing widget examples", file=stream))
    tqdm.std.tqdm.__init__ = drawing  # the rest of the test session keeps its bars
    assert stream.getvalue() == ""
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars
    from transformers.utils import logging as transformers_logging

    assert are_progress_bars_disabled() and not transformers_logging.is_progress_bar_enabled()
    for variable in ("TQDM_DISABLE", "HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(variable, raising=False)
    enable_progress_bars()  # the rest of the test session keeps its bars
    transformers_logging.enable_progress_bar()
