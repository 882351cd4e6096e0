"""Pruning sweeps: every (method x sampling) curve at every rate, one durable row per evaluation, resumable."""

from medprune.sweep.table import KEY_FIELDS, RowLog, read_csv, read_results, row_id, row_key, write_csv

__all__ = ["KEY_FIELDS", "RowLog", "read_csv", "read_results", "row_id", "row_key", "write_csv"]
