"""The key paths of Helm values, and the values we set that a chart no longer has.

A chart upgrade (``vaultdr upgrade-check --chart-version NEW``) can silently drop a
value: Helm renders whatever the templates read and ignores every other key, so a
key the new chart's templates no longer know (a renamed ``server.ha.raft`` option,
a removed ``podManagementPolicy``) is accepted by ``helm upgrade`` and has no effect.
Before the cluster is touched, the check compares the key paths of our values file
with those of the new chart's ``values.yaml`` (``helm show values CHART --version
NEW``) and reports every value we set that is not there.

Pure functions over parsed YAML, no I/O: the same flattening serves the script that
records the official charts' key paths.

A path is dotted (``server.ha.raft.enabled``); a dot inside a key is written ``\\.``
as ``helm --set`` reads it. Lists and scalars are leaves (a chart declares a list as
a whole, ``server.extraVolumes: []``). A mapping that is empty or null in the chart
(``server.extraEnvironmentVars: {}``, ``server.resources: {}``) is *open*: the chart
takes any key under it, so nothing we set below it is reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["flatten", "key_paths", "missing_in_chart", "open_paths"]


def _escape(key: object) -> str:
    return str(key).replace(".", "\\.")


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every leaf of ``values`` by its dotted path (an empty mapping is a leaf, ``{}``)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        path = f"{prefix}.{_escape(key)}" if prefix else _escape(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, path))
        else:
            flat[path] = value
    return flat


def key_paths(values: Mapping[str, Any]) -> list[str]:
    """The dotted paths of every leaf of ``values``, sorted."""
    return sorted(flatten(values))


def open_paths(values: Mapping[str, Any]) -> list[str]:
    """The paths whose value is an empty mapping or null: the chart takes any key below."""
    return sorted(path for path, value in flatten(values).items() if value is None or value == {})


def _ancestors(path: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b`` (escaped dots are not separators)."""
    parts: list[str] = []
    current = ""
    escaped = False
    for char in path:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            current += char
            escaped = True
        elif char == ".":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def missing_in_chart(ours: Mapping[str, Any], chart: Mapping[str, Any]) -> list[str]:
    """Every key path we set (a leaf of ``ours``) that ``chart``'s values do not have,
    neither as a key nor below an open (empty or null) value; sorted."""
    chart_flat = flatten(chart)
    known = set(chart_flat)
    # Every mapping the chart declares, so that setting a whole declared mapping is fine.
    declared = {ancestor for path in chart_flat for ancestor in _ancestors(path)}
    opened = set(open_paths(chart))
    missing: list[str] = []
    for path in key_paths(ours):
        if path in known or path in declared:
            continue
        if any(ancestor in opened for ancestor in _ancestors(path)):
            continue
        missing.append(path)
    return missing
