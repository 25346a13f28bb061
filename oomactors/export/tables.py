"""The events of a run as one flat table, in Parquet (via pyarrow) or CSV.

The table is :attr:`oomactors.api.Run.events`: ``t`` (seconds), ``event``, ``cpu``,
``pid``, then one column per field name.  Flat formats want one type per column, so a
column whose values are not all of one scalar type is written as text: numbers and words
as themselves, lists (an OOM report's task table, a cgroup kill's members) as JSON.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import InputError


def flat_events(run: Any) -> Any:
    """The events frame with every column of one scalar type."""
    df = run.events.copy()
    for col in df.columns:
        if df[col].dtype != object:
            continue
        df[col] = df[col].map(_text, na_action="ignore").astype("string")
    return df


def _text(v: Any) -> str:
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def write_table(run: Any, path: str, fmt: str) -> None:
    df = flat_events(run)
    try:
        if fmt == "csv":
            df.to_csv(path, index=False)
        elif fmt == "parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:  # pragma: no cover - depends on the install
                raise InputError("parquet export needs pyarrow: pip install 'oomactors[frames]'") from None
            df.to_parquet(path, engine="pyarrow", index=False)
        else:
            raise InputError(f"unknown table format {fmt!r}")
    except OSError as e:
        raise InputError(f"{path}: cannot write: {e.strerror or e}") from None
