"""Orchestration above the engines: the end-to-end demo and k-fold cross-validation.

They talk to an engine only through :func:`bsi_d2.engine.get_engine` and
:class:`bsi_d2.engine.predictor.Predictor`, and read batch-inference outputs through
:mod:`bsi_d2.inference.outputs`.
"""
