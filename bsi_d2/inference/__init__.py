"""Batch inference: folders of scans -> predictions, per-region BSI and reports, resumably."""

from bsi_d2.inference.batch import BatchOptions, BatchResult, finalize_outputs, run_batch

__all__ = ["BatchOptions", "BatchResult", "finalize_outputs", "run_batch"]
