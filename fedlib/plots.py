"""Kept for ``benchmarks/class_weight.py`` only: the report's writer is ``fedlib.report.io``,
its tables and figures the other modules of ``fedlib.report``."""

from .report.io import markdown_table, save_table

__all__ = ["markdown_table", "save_table"]
