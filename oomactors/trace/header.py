"""``trace show --header``: what produced a trace (oomactors version, seed, policy, HZ and
the whole config, as simulated: "auto" sizes resolved)."""

from __future__ import annotations

from typing import Any

from .stream import Trace

_SHOWN = ("oomactors_version", "seed", "policy", "daemon", "hz", "format", "version")


def header_info(trace: Trace) -> dict[str, Any]:
    """The header without its event table (that is `trace stats`' and the docs' business)."""
    h = trace.header
    info = {k: h.get(k) for k in _SHOWN if k in h}
    info.update({k: v for k, v in h.items() if k not in info and k not in ("events", "config")})
    info["events_in_table"] = len(h.get("events", ()))
    info["config"] = h.get("config")
    return info


def header_text(trace: Trace) -> str:
    info = header_info(trace)
    lines = [f"# {trace.path}"]
    for k, v in info.items():
        if k != "config":
            lines.append(f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}")
    lines.append("")
    lines.append("# the config, as simulated")
    lines += _toml(info.get("config") or {})
    return "\n".join(lines) + "\n"


def _toml(config: dict[str, Any]) -> list[str]:
    """The config as TOML-like text: tables, then arrays of tables, values as JSON."""
    import json

    out: list[str] = []

    def value(v: Any) -> str:
        return json.dumps(v, separators=(", ", " = ")) if not isinstance(v, dict) else _inline(v)

    def _inline(d: dict[str, Any]) -> str:
        return "{ " + ", ".join(f"{k} = {value(v)}" for k, v in d.items()) + " }"

    def table(name: str, d: dict[str, Any]) -> None:
        scalars = {k: v for k, v in d.items() if not (isinstance(v, dict) and k != "time" and
                                                      set(v) - {"ns", "jiffies"})}
        nested = {k: v for k, v in d.items() if k not in scalars}
        out.append(f"[{name}]")
        out.extend(f"{k} = {value(v)}" for k, v in scalars.items() if v is not None)
        out.append("")
        for k, v in nested.items():
            table(f"{name}.{k}", v)

    for key, v in config.items():
        if isinstance(v, dict):
            table(key, v)
        elif isinstance(v, list):
            for item in v:
                out.append(f"[[{key}]]")
                out.extend(f"{k} = {value(x)}" for k, x in item.items() if x is not None)
                out.append("")
        elif v is not None:
            out.append(f"{key} = {value(v)}")
    return out
