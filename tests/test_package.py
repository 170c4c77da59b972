"""Tests of the package surface: lazy public exports and a command line that starts without torch."""

from __future__ import annotations

import importlib
import subprocess
import sys

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
