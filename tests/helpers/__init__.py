"""Code the tests share that is not a fixture: paths and builders of tiny synthetic data sets.

Importable as ``helpers`` because ``tests/`` is on ``sys.path`` (pytest puts the folder of
``tests/conftest.py`` there)."""
