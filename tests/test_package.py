"""Tests of the package surface: lazy public exports and a command line that starts without torch."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import st_tasb


def test_every_public_name_resolves_to_its_module_object():
    """Guards the lazy export table: each name of ``__all__`` is the object its module defines, and an
    unknown name is an AttributeError (so ``hasattr`` and ``from st_tasb import X`` behave normally)."""
    assert sorted(st_tasb.__all__) == sorted(st_tasb._EXPORTS) == sorted(set(st_tasb.__all__))
    for name in st_tasb.__all__:
        module = importlib.import_module(st_tasb._EXPORTS[name])
        assert getattr(st_tasb, name) is getattr(module, name), name
    assert set(st_tasb.__all__) <= set(dir(st_tasb))
    assert not hasattr(st_tasb, "NoSuchThing")
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        st_tasb.NoSuchThing  # noqa: B018


def test_help_of_every_subcommand_does_not_import_torch():
    """Guards a fast command line: ``st-tasb <command> --help`` parses options without loading torch,
    sentence-transformers or datasets (each costs seconds)."""
    code = (
        "import sys\n"
        "from st_tasb.cli import main\n"
        "for command in ('mine', 'score', 'cluster', 'train', 'evaluate', 'push', 'demo'):\n"
        "    try:\n"
        "        main([command, '--help'])\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0, (command, exit.code)\n"
        "heavy = sorted({'torch', 'sentence_transformers', 'datasets', 'faiss'} & set(sys.modules))\n"
        "print('heavy modules:', heavy)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "heavy modules: []" in result.stdout


ROUND_ONE_NAMES = (
    "BatchComposition BeirData BiEncoderTeacher CachedDualTeacherMarginMSELoss ColBERTModel ColBERTTeacher "
    "CrossEncoderTeacher DataFormatError DualTeacherMarginMSELoss EmbeddingCache InBatchTeacher MissingScoreError "
    "PairIndex PrecomputedTeacher PseudoQueries QueryClusters TASBDataCollator TeacherScoreTable TextStore "
    "TopicAwareBalancedBatchSampler TrainingSettings UnknownIdError dual_teacher_margin_mse evaluate_model evaluate_run "
    "load_beir load_qrels make_pseudo_queries make_student mine_candidates retrieve score_candidates"
).split()


def test_names_exported_before_the_package_layout_still_import():
    """Guards the promise of the restructuring: every name `from st_tasb import X` gave before the modules moved
    into stage packages still resolves."""
    missing = [name for name in ROUND_ONE_NAMES if name not in st_tasb.__all__]
    assert not missing, missing
    namespace: dict = {}
    exec("from st_tasb import " + ", ".join(ROUND_ONE_NAMES), namespace)  # noqa: S102
    assert all(namespace[name] is getattr(st_tasb, name) for name in ROUND_ONE_NAMES)


def test_pipeline_layer_contract_holds():
    """Guards the architecture: import-linter checks the contract in .importlinter (each stage package imports only
    the stages below it, cli/ at the top, no cycles); a new upward import or cycle fails here."""
    root = Path(st_tasb.__file__).parent.parent
    code = "from importlinter.cli import lint_imports; raise SystemExit(lint_imports(config_filename='.importlinter'))"
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


def test_no_deprecated_sentence_transformers_path_is_imported_outside_compat():
    """Guards the single compatibility strategy: only st_tasb/data/compat.py names sentence-transformers paths that
    moved in 6.x; importing every st_tasb module raises no DeprecationWarning attributed to st_tasb."""
    package = Path(st_tasb.__file__).parent
    moved = ("sentence_transformers.sampler", "sentence_transformers.data_collator", "sentence_transformers.models",
             "sentence_transformers.base.", "sentence_transformers.sentence_transformer.")
    offenders = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path.name != "compat.py" and any(name in path.read_text(encoding="utf-8") for name in moved)
    ]
    assert not offenders, offenders
    modules = [
        "st_tasb." + ".".join(path.relative_to(package).with_suffix("").parts)
        for path in package.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    ]
    code = (
        "import importlib, warnings\n"
        "warnings.filterwarnings('error', category=DeprecationWarning, module='st_tasb')\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
