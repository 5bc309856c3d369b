"""Fixtures shared by the whole suite. Builders and paths that module-level code needs too
(parametrisation, ``skipif``) are in ``tests/helpers/``."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.paths import CONFIGS, NEMA

from bsi_d2.taxonomy import Taxonomy, load_taxonomy


@pytest.fixture(scope="session")
def nema_path() -> Path:
    """The real NEMA NM1 whole-body DICOM (``../shared`` beside the repository)."""
    if not NEMA.is_file():
        pytest.skip(f"the NEMA NM1 file is not at {NEMA} (../shared beside the repository)")
    return NEMA


@pytest.fixture(scope="session")
def taxonomy() -> Taxonomy:
    """The built-in taxonomy (frozen: safe to share)."""
    return load_taxonomy()


@pytest.fixture(scope="session")
def configs_dir() -> Path:
    """The repository's ``configs/`` folder."""
    return CONFIGS
