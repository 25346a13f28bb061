"""Finding a policy by name: built-ins, installed plugins, or ``package.module:Name``.

* built-in names: :data:`policies.BUILTIN`;
* third-party packages declare an entry point in the group ``oomactors.policies``::

      [project.entry-points."oomactors.policies"]
      fair-share = "my_package.policy:FairShare"

* ``--policy package.module:Name`` imports a class from the user's own code (the current
  directory is on the import path for this).

A policy class subclasses :class:`policies.api.KillPolicy` or :class:`policies.api.Daemon`
(or has the same shape: ``name``, ``description``, ``kind``, ``Params`` and ``select`` or
``run``).  Its parameters come from the config's ``[policy]`` table and are validated
against ``Params``; a bad value is one line naming ``policy.<key>``.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from .api import PolicyError

ENTRY_POINT_GROUP = "oomactors.policies"


@dataclass(frozen=True)
class PolicyInfo:
    name: str
    kind: str          # "kernel" or "daemon"
    origin: str        # "built-in", "plugin (<distribution>)"
    description: str


def _builtin() -> dict[str, type]:
    from . import BUILTIN
    return BUILTIN


def _plugins() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _import_spec(spec: str) -> type:
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise PolicyError(f"policy {spec!r}: expected package.module:Name")
    added = False
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
        added = True
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's module, reported in one line
        raise PolicyError(f"policy {spec!r}: cannot import {module}: {type(exc).__name__}: {exc}") from exc
    finally:
        if added:
            sys.path.remove(cwd)
    obj = mod
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise PolicyError(f"policy {spec!r}: {module} has no {attr}")
    return obj  # type: ignore[return-value]


def policy_class(spec: str) -> type:
    """The class a policy name or spec refers to (built-ins first, then plugins)."""
    builtin = _builtin()
    if spec in builtin:
        return builtin[spec]
    plugins = _plugins()
    if spec in plugins:
        try:
            cls = plugins[spec].load()
        except Exception as exc:  # noqa: BLE001
            raise PolicyError(f"policy {spec!r}: its plugin failed to load: {type(exc).__name__}: {exc}") from exc
    elif ":" in spec:
        cls = _import_spec(spec)
    else:
        known = ", ".join(sorted(set(builtin) | set(plugins)))
        raise PolicyError(f"unknown policy {spec!r} (available: {known}; or package.module:Name)")
    _check_shape(spec, cls)
    return cls


def _check_shape(spec: str, cls: Any) -> None:
    if not isinstance(cls, type):
        raise PolicyError(f"policy {spec!r}: {cls!r} is not a class")
    kind = getattr(cls, "kind", None)
    if kind == "kernel" and callable(getattr(cls, "select", None)):
        return
    if kind == "daemon" and callable(getattr(cls, "run", None)):
        return
    raise PolicyError(f"policy {spec!r}: {cls.__name__} is neither a KillPolicy (kind 'kernel' with "
                      "select(ctx)) nor a Daemon (kind 'daemon' with run(host))")


class ParamProblem(PolicyError):
    """A ``[policy]`` parameter that does not validate: ``key`` (a tuple path) and ``problem``."""

    def __init__(self, spec: str, key: tuple, problem: str, where: str = "policy") -> None:
        self.key, self.problem = key, problem
        dotted = ".".join(str(k) for k in key)
        super().__init__(f"{where}{'.' + dotted if dotted else ''}: {problem} (policy {spec!r})")


def validate_params(spec: str, params: dict[str, Any] | None, *, where: str = "policy") -> Any:
    """The ``[policy]`` table's values as the policy's ``Params`` (None if it has none)."""
    cls = policy_class(spec)
    model: type[BaseModel] | None = getattr(cls, "Params", None)
    params = dict(params or {})
    if model is None:
        if params:
            raise ParamProblem(spec, (sorted(params)[0],), "unknown key (the policy takes no parameters)", where)
        return None
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        err = exc.errors()[0]
        if err["type"] == "extra_forbidden":
            problem = "unknown key"
        elif err["type"] == "value_error":
            problem = str(err["ctx"]["error"])
        else:
            problem = err["msg"]
        raise ParamProblem(spec, tuple(err["loc"]), problem, where) from None


def load_policy(spec: str, params: dict[str, Any] | None = None) -> Any:
    """A ready policy instance for a name or ``package.module:Name``."""
    cls = policy_class(spec)
    validated = validate_params(spec, params)
    try:
        return cls(validated)
    except Exception as exc:  # noqa: BLE001
        raise PolicyError(f"policy {spec!r}: could not be created: {type(exc).__name__}: {exc}") from exc


def policy_for(cfg: Any, spec: str | None = None) -> Any:
    """The policy a run uses: ``spec`` (from the command line) or the config's
    ``[policy]`` name, with the config's parameters when the names match."""
    table = cfg.policy
    if spec is None:
        if table is None:
            return None
        return load_policy(table.name, table.params)
    params = table.params if table is not None and table.name == spec else None
    return load_policy(spec, params)


def available(test_only: bool = False) -> list[PolicyInfo]:
    """Every policy by name: built-ins, then installed plugins.  A plugin class that says
    ``test_only = True`` (a deliberately broken fixture of some test suite) is left out
    unless ``test_only`` is asked for, and then marked as such."""
    out = [PolicyInfo(name, cls.kind, "built-in", cls.description) for name, cls in _builtin().items()]
    for name, ep in sorted(_plugins().items()):
        dist = ep.dist.name if getattr(ep, "dist", None) else "?"
        try:
            cls = ep.load()
            _check_shape(name, cls)
            if getattr(cls, "test_only", False):
                if not test_only:
                    continue
                out.append(PolicyInfo(name, cls.kind, f"plugin ({dist}, test only)", cls.description))
                continue
            out.append(PolicyInfo(name, cls.kind, f"plugin ({dist})", cls.description))
        except Exception as exc:  # noqa: BLE001 - a broken plugin is listed, not fatal
            out.append(PolicyInfo(name, "?", f"plugin ({dist})", f"cannot load: {type(exc).__name__}: {exc}"))
    return out
