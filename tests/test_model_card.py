"""The TAS-Balanced section of the model card: placed into sentence-transformers' own card, rewritable, complete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sentence_transformers import SentenceTransformer

from st_tasb.training.model_card import (
    CARD_DATA_FILE,
    SETTING_LABELS,
    TASBModelCard,
    add_evaluation,
    attach_model_card,
    render_section,
    write_model_card,
)
from st_tasb.training.student import make_student

METRICS = {"ndcg@10": 0.61234, "mrr@10": 0.5, "recall@100": 0.9, "recall@1000": 0.95, "map": 0.55}


@pytest.fixture
def student(small_student_path: str) -> SentenceTransformer:
    """A student built from modules, as training makes one: sentence-transformers generates its card on save."""
    model = make_student(small_student_path, pooling="mean", device="cpu")
    model.model_card_data.local_files_only = True
    return model


@pytest.fixture
def saved_model(student: SentenceTransformer, tmp_path: Path) -> Path:
    """A model folder with the README.md that sentence-transformers generates on save, the section attached."""
    small_student = student
    attach_model_card(small_student, card())
    folder = tmp_path / "model"
    small_student.save(str(folder))
    card().save(folder)
    return folder


def card() -> TASBModelCard:
    return TASBModelCard(
        settings={"k": 2000, "clusters_per_batch": 1, "n_bins": 10, "alpha": 0.75, "batch_size": 32, "topic_aware": True},
        teachers={"pairwise": "T2 ensemble of three cross-encoders", "in-batch": "ColBERT"},
        data={"training pairs": 39_780_811, "dataset": "MS MARCO passage"},
    )


def test_section_is_written_by_sentence_transformers_into_its_card(saved_model: Path, small_student_path: str, tmp_path: Path) -> None:
    """Guards the template hook: the card sentence-transformers writes on save holds the section before its Training
    Details, every line of the card it writes without the section is still there, and the folder still loads."""
    text = (saved_model / "README.md").read_text()
    plain = make_student(small_student_path, pooling="mean", device="cpu")  # its own, unmodified template
    plain.model_card_data.local_files_only = True
    plain.save(str(tmp_path / "plain"))
    assert all(line in text for line in (tmp_path / "plain" / "README.md").read_text().splitlines())
    assert text.startswith("---")  # the YAML metadata block stays first
    assert text.index("## Usage") < text.index("## TAS-Balanced training") < text.index("## Training Details")
    assert SentenceTransformer(str(saved_model), device="cpu").encode(["x"]).shape[0] == 1


def test_section_records_settings_teachers_and_data(saved_model: Path) -> None:
    """Guards the card's content: the paper's settings with readable names, both teachers and the data (the BibTeX
    is sentence-transformers' to print, from the loss's citation, so the section does not repeat it)."""
    text = (saved_model / "README.md").read_text()
    for key, value in (("k", "2000"), ("clusters_per_batch", "1"), ("n_bins", "10"), ("alpha", "0.75"), ("batch_size", "32")):
        assert f"| {SETTING_LABELS[key]} | {value} |" in text
    assert "| topic-aware batches | yes |" in text
    assert "- **pairwise:** T2 ensemble of three cross-encoders" in text and "- **in-batch:** ColBERT" in text
    assert "- **training pairs:** 39780811" in text
    assert "hofstaetter2021tasb" not in render_section(card())


def test_rewriting_replaces_the_section_and_evaluations_accumulate(student: SentenceTransformer, saved_model: Path) -> None:
    """Guards idempotence: attaching and writing again leave one section, and add_evaluation adds rows to the stored
    values."""
    attach_model_card(student, card())
    student.save(str(saved_model))
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


@pytest.mark.parametrize("name", ["paper", "st-tasb", "mnrl", "mnrl-topic"])
def test_the_card_states_what_its_recipe_computes(name: str) -> None:
    """Guards the card's prose against its settings, per recipe: the similarity it scores by (a cosine model is
    never told it is a dot-product one), every loss term of non-zero weight and no other, and the batches."""
    import dataclasses

    from st_tasb.training.recipes import KINDS, RECIPES
    from st_tasb.training.settings import TrainingSettings

    settings = dataclasses.asdict(TrainingSettings(recipe=name))
    kind = KINDS[settings["loss"]]
    if not kind.uses_teacher:
        kind.card(settings, None, None)  # blanks the teachers' settings, as training does
    text = render_section(TASBModelCard(settings=settings)).split("### Settings")[0]  # the prose; the table follows
    recipe = RECIPES[name]
    assert f"by the recipe `{name}`" in text
    if recipe.terms.similarity == "cosine":
        assert "Scores are cosine similarities of the embeddings (x 20 in training" in text and "dot product" not in text
    else:
        assert "Scores are dot products of the embeddings" in text and "cosine" not in text
    if recipe.kind.uses_teacher:
        assert f"the loss is {recipe.terms.describe()}" in text
        assert ("Margin-MSE" in text) == (recipe.terms.pairwise_weight > 0 or recipe.terms.inbatch_loss == "margin-mse")
        assert ("contrastive" in text) == (recipe.terms.contrastive_weight > 0)
    else:
        assert "no teacher: the loss is sentence-transformers' MultipleNegativesRankingLoss" in text
        assert "Margin-MSE" not in text and "KL" not in text
    assert ("one topic cluster" in text) == recipe.topic_aware


def test_a_card_without_recorded_settings_claims_nothing() -> None:
    """Guards cards filled by hand: without the loss kind in the settings, the card states no loss and no score."""
    text = render_section(TASBModelCard(settings={"batch_size": 32})).split("### Settings")[0]
    assert "dot product" not in text and "Margin-MSE" not in text and "cosine" not in text
