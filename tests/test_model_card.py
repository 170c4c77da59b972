"""The TAS-Balanced section of the model card: placed into sentence-transformers' own card, rewritable, complete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sentence_transformers import SentenceTransformer

from st_tasb.training.losses import TASB_CITATION
from st_tasb.training.model_card import (
    CARD_DATA_FILE,
    SETTING_LABELS,
    TASBModelCard,
    add_evaluation,
    render_section,
    write_model_card,
)

METRICS = {"ndcg@10": 0.61234, "mrr@10": 0.5, "recall@100": 0.9, "recall@1000": 0.95, "map": 0.55}


@pytest.fixture
def saved_model(small_student: SentenceTransformer, tmp_path: Path) -> Path:
    """A model folder with the README.md that sentence-transformers generates on save."""
    small_student.model_card_data.local_files_only = True
    folder = tmp_path / "model"
    small_student.save(str(folder))
    assert (folder / "README.md").is_file()
    return folder


def card() -> TASBModelCard:
    return TASBModelCard(
        settings={"k": 2000, "clusters_per_batch": 1, "n_bins": 10, "alpha": 0.75, "batch_size": 32, "topic_aware": True},
        teachers={"pairwise": "T2 ensemble of three cross-encoders", "in-batch": "ColBERT"},
        data={"training pairs": 39_780_811, "dataset": "MS MARCO passage"},
    )


def test_section_is_inserted_into_the_sentence_transformers_card(saved_model: Path) -> None:
    """Guards "on top of what sentence-transformers writes": every line of the generated card survives, the section
    sits before its Training Details, and the folder still loads as a SentenceTransformer."""
    original = (saved_model / "README.md").read_text()
    write_model_card(saved_model, card())
    text = (saved_model / "README.md").read_text()
    assert all(line in text for line in original.splitlines())
    assert text.startswith("---")  # the YAML metadata block stays first
    assert text.index("## Usage") < text.index("## TAS-Balanced training") < text.index("## Training Details")
    assert SentenceTransformer(str(saved_model), device="cpu").encode(["x"]).shape[0] == 1


def test_section_records_settings_teachers_data_and_citation(saved_model: Path) -> None:
    """Guards the card's content: the paper's settings with readable names, both teachers, the data and the BibTeX."""
    write_model_card(saved_model, card())
    text = (saved_model / "README.md").read_text()
    for key, value in (("k", "2000"), ("clusters_per_batch", "1"), ("n_bins", "10"), ("alpha", "0.75"), ("batch_size", "32")):
        assert f"| {SETTING_LABELS[key]} | {value} |" in text
    assert "| topic-aware batches | yes |" in text
    assert "- **pairwise:** T2 ensemble of three cross-encoders" in text and "- **in-batch:** ColBERT" in text
    assert "- **training pairs:** 39780811" in text
    assert TASB_CITATION.strip() in text


def test_rewriting_replaces_the_section_and_evaluations_accumulate(saved_model: Path) -> None:
    """Guards idempotence: writing twice leaves one section, and add_evaluation adds rows to the stored values."""
    write_model_card(saved_model, card())
    write_model_card(saved_model, card())
    add_evaluation(saved_model, "dev", METRICS)
    add_evaluation(saved_model, "test", {**METRICS, "map": 0.25})
    text = (saved_model / "README.md").read_text()
    assert text.count("## TAS-Balanced training") == 1 and text.count("st-tasb:end") == 1
    assert "| dev | 0.6123 | 0.5000 | 0.9000 | 0.9500 | 0.5500 |" in text
    assert "| test | 0.6123 | 0.5000 | 0.9000 | 0.9500 | 0.2500 |" in text
    stored = json.loads((saved_model / CARD_DATA_FILE).read_text())
    assert set(stored["evaluation"]) == {"dev", "test"} and stored["settings"]["n_bins"] == 10


def test_a_folder_without_readme_gets_the_section_alone(tmp_path: Path) -> None:
    """Guards the fallback: without a generated card the section is written on its own (nothing else invented)."""
    write_model_card(tmp_path, card())
    assert (tmp_path / "README.md").read_text() == render_section(card())


def test_loading_card_values_reports_missing_and_malformed_files(tmp_path: Path) -> None:
    """Guards clear errors: a folder not trained with st-tasb, or a corrupt values file, is named."""
    with pytest.raises(FileNotFoundError, match=CARD_DATA_FILE):
        add_evaluation(tmp_path, "dev", METRICS)
    (tmp_path / CARD_DATA_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=str(tmp_path / CARD_DATA_FILE)):
        TASBModelCard.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        write_model_card(tmp_path / "absent", card())
