"""``trace show --header``: what produced a trace (oomactors version, seed, policy, HZ and
the whole config, as simulated: "auto" sizes resolved).

The seed, HZ and config are the trace header's own keys; the oomactors version is an extra
header key the command line writes (:func:`provenance`); the policy and userspace daemon
are the run's ``sim:policy`` event (none: the kernel's own, ``linux``), so that one fact
lives in one place."""

from __future__ import annotations

from typing import Any

from .stream import Trace

_SHOWN = ("oomactors_version", "seed", "hz", "format", "version")


def provenance() -> dict[str, Any]:
    """Extra trace-header keys saying which oomactors wrote a trace."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return {"oomactors_version": version("oomactors")}
    except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
        return {"oomactors_version": "unknown"}


def run_policy(trace: Trace) -> tuple[str, str | None]:
    """The kill policy and userspace daemon of the run, from its ``sim:policy`` event
    (emitted at t=0, right after ``sim:run_start``)."""
    try:
        pid = trace.names.index("sim:policy")
    except ValueError:
        return "linux", None
    fields = trace.fields[pid]
    for rec in trace.records():
        if rec[1] == pid:
            ev = dict(zip(fields, rec[4:]))
            return ev.get("policy", "linux"), ev.get("daemon") or None
        if rec[0] > 0:
            break
    return "linux", None


def header_info(trace: Trace) -> dict[str, Any]:
    """The header without its event table (that is `trace stats`' and the docs' business)."""
    h = trace.header
    info = {k: h.get(k) for k in _SHOWN[:2] if k in h}
    info["policy"], info["daemon"] = run_policy(trace)
    info.update({k: h.get(k) for k in _SHOWN[2:] if k in h})
    info.update({k: v for k, v in h.items() if k not in info and k not in ("events", "config")})
    info["events_in_table"] = len(h.get("events", ()))
    info["config"] = h.get("config")
    return info


def header_text(trace: Trace) -> str:
    info = header_info(trace)
    lines = [f"# {trace.path}"]
    for k, v in info.items():
        if k != "config" and v is not None:
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
        return "{ " + ", ".join(f"{k} = {value(v)}" for k, v in d.items() if v is not None) + " }"

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
