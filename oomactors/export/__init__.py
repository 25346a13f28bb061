"""Exports of a run for other tools: Perfetto (:mod:`.perfetto`), Parquet and CSV
(:mod:`.tables`).  Each reads the run's trace; none needs the simulator."""

from __future__ import annotations

import os
from typing import Any

from ..errors import InputError

FORMATS = ("perfetto", "parquet", "csv")
_BY_SUFFIX = {".pftrace": "perfetto", ".perfetto-trace": "perfetto", ".perfetto": "perfetto",
              ".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


def format_for(path: str, format: str | None) -> str:
    """The export format: as given, else from the output file's extension."""
    if format is not None:
        if format not in FORMATS:
            raise InputError(f"unknown export format {format!r} (known: {', '.join(FORMATS)})")
        return format
    fmt = _BY_SUFFIX.get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise InputError(f"{path}: cannot tell the export format from the extension; "
                         f"give --format ({', '.join(FORMATS)})")
    return fmt


def export(run: Any, path: str, format: str | None = None) -> None:
    """Write ``run`` (an :class:`oomactors.api.Run`) to ``path`` in ``format``."""
    fmt = format_for(path, format)
    if fmt == "perfetto":
        from .perfetto import write_perfetto
        write_perfetto(run, path)
    else:
        from .tables import write_table
        write_table(run, path, fmt)
