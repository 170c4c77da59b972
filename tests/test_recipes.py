"""Recipes and loss terms: one definition each, resolved into the settings, and the architecture rules around them."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

import st_tasb
from st_tasb.training.recipes import RECIPE_FIELDS, RECIPES, resolve
from st_tasb.training.settings import TrainingSettings
from st_tasb.training.terms import LossTerms

PACKAGE = Path(st_tasb.__file__).parent


def test_every_loss_term_is_a_training_setting_and_a_recipe_field() -> None:
    """Guards the one list of terms: TrainingSettings declares each LossTerms field (flat, for the command line) and a
    recipe sets each, so a new term cannot be left out of the options or the recipes."""
    settings = {field.name for field in dataclasses.fields(TrainingSettings)}
    assert set(LossTerms.fields()) <= settings and set(RECIPE_FIELDS) <= settings
    assert set(LossTerms.fields()) <= set(RECIPE_FIELDS)


@pytest.mark.parametrize("name", list(RECIPES))
def test_a_recipe_sets_its_fields_and_flags_override_them(name: str) -> None:
    """Guards recipe resolution: the settings of a recipe are its own values, one field given overrides only that
    field, and switching recipe leaves nothing of the previous one."""
    recipe = RECIPES[name]
    settings = TrainingSettings(recipe=name)
    assert {field: getattr(settings, field) for field in RECIPE_FIELDS} == recipe.settings()
    assert settings.loss_terms() == recipe.terms
    overridden = TrainingSettings(recipe=name, similarity_scale=7.0)
    assert overridden.similarity_scale == 7.0
    assert {f: getattr(overridden, f) for f in RECIPE_FIELDS if f != "similarity_scale"} == {
        f: v for f, v in recipe.settings().items() if f != "similarity_scale"}
    other = next(other for other in RECIPES if other != name)
    switched = TrainingSettings(recipe=name, alpha=0.1, max_steps=5).with_recipe(other)
    assert switched.loss_terms() == RECIPES[other].terms and switched.max_steps == 5


def test_the_loss_alone_picks_a_recipe_and_a_contradiction_is_refused() -> None:
    """Guards the old flag: --loss mnrl alone trains MNRL with topic-aware batches (mnrl-topic), --loss tas-b the
    paper's recipe, and a loss that contradicts the named recipe is refused, naming the recipes of that loss."""
    assert resolve(None, {"loss": "mnrl"})[0] == "mnrl-topic"
    assert TrainingSettings().recipe == "paper" and TrainingSettings(loss="tas-b").loss_terms() == LossTerms()
    with pytest.raises(ValueError, match=r"recipe 'st-tasb' trains with loss tas-b, not mnrl: .*\(mnrl, mnrl-topic\)"):
        TrainingSettings(recipe="st-tasb", loss="mnrl")
    with pytest.raises(ValueError, match="unknown recipe 'best'; choose one of st-tasb, paper, mnrl, mnrl-topic"):
        TrainingSettings(recipe="best")


@pytest.mark.parametrize(("values", "message"), [
    ({"alpha": -1.0}, "alpha must be a finite number >= 0"),
    ({"pairwise_weight": float("nan")}, "pairwise_weight must be a finite number >= 0"),
    ({"similarity_scale": 0.0}, "similarity_scale must be a finite number > 0"),
    ({"inbatch_loss": "listnet"}, "inbatch_loss must be one of margin-mse, kl, not 'listnet'"),
    ({"similarity": "l2"}, "similarity must be one of dot, cosine, not 'l2'"),
])
def test_terms_are_checked_once_the_same_way_everywhere(values: dict, message: str) -> None:
    """Guards one validation: LossTerms, the settings and the loss refuse the same bad value with the same words."""
    from st_tasb.training.losses import TeacherDistillationLoss

    for build in (lambda: LossTerms(**values), lambda: TrainingSettings(**values),
                  lambda: TeacherDistillationLoss(None, **{"alpha": 0.0, **values})):
        with pytest.raises(ValueError, match=re.escape(message)):
            build()


def test_the_terms_describe_what_the_loss_computes() -> None:
    """Guards the card's words: each recipe's description of its terms names exactly the terms of non-zero weight."""
    assert RECIPES["paper"].terms.describe() == "pairwise Margin-MSE x 1 + in-batch Margin-MSE x 0.75"
    assert RECIPES["st-tasb"].terms.describe() == "in-batch KL divergence x 1 + contrastive (labels) x 1"
    assert LossTerms(contrastive_weight=0.5).describe(has_inbatch_teacher=False) == (
        "pairwise Margin-MSE x 1 + contrastive (labels) x 0.5")


def _sources() -> list[tuple[Path, str]]:
    return [(path, path.read_text(encoding="utf-8")) for path in sorted(PACKAGE.rglob("*.py"))]


def test_the_loss_kind_is_compared_nowhere_but_in_the_recipes() -> None:
    """Guards one place for the loss kind: no module but training/recipes.py compares a value with "tas-b" or
    "mnrl" (the kinds are looked up in KINDS instead)."""
    pattern = re.compile(r"""[!=]=\s*["'](tas-b|mnrl)["']|["'](tas-b|mnrl)["']\s*[!=]=""")
    offenders = [f"{path.relative_to(PACKAGE)}:{number}" for path, text in _sources() if path.name != "recipes.py"
                 for number, line in enumerate(text.splitlines(), 1) if pattern.search(line)]
    assert offenders == []


def test_no_function_is_longer_than_80_lines() -> None:
    """Guards readable functions: every function of st_tasb/ fits in 80 lines, its docstring not counted."""
    long = []
    for path, text in _sources():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body[1:] if ast.get_docstring(node) is not None else node.body
                lines = node.end_lineno - (body[0].lineno if body else node.lineno) + 1
                if lines > 80:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


def test_no_copy_of_the_loss_keyword_list_remains() -> None:
    """Guards the terms object: no module of st_tasb/ spells out the loss terms as keyword arguments of a call (the
    terms travel as a LossTerms), but for LossTerms' own definition and the recipes that fill it."""
    copies = []
    for path, text in _sources():
        if path.name in ("terms.py", "recipes.py"):
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call):
                named = {keyword.arg for keyword in node.keywords} & {"pairwise_weight", "contrastive_weight", "inbatch_loss"}
                if len(named) >= 2:
                    copies.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert copies == []


def test_st_tasb_train_takes_a_recipe_by_name_and_flags_override_it() -> None:
    """Guards `st-tasb train --recipe NAME`: the recipe's settings reach the options, a flag overrides one of them,
    and an unknown name is one error naming the recipes."""
    from st_tasb.cli import load_command
    from st_tasb.cli.options import ConfigError, OptionParser

    parser = OptionParser(load_command("train").arguments)
    required = ["--table", "t", "--data", "d", "--output", "o", "--student", "s"]
    parsed = parser.parse([*required, "--recipe", "st-tasb", "--alpha", "0.5"])
    assert TrainingSettings.of(parsed).loss_terms() == dataclasses.replace(RECIPES["st-tasb"].terms, alpha=0.5)
    assert parser.parse([*required, "--recipe", "mnrl"]).topic_aware is False
    assert parser.parse([*required, "--recipe", "mnrl", "--topic-aware"]).topic_aware is True
    with pytest.raises(ConfigError, match="unknown recipe 'fast'; choose one of st-tasb, paper, mnrl, mnrl-topic"):
        parser.parse([*required, "--recipe", "fast"])
