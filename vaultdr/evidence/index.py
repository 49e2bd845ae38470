"""``reports/index.html``: every past run, newest first, and each scenario's RTO trend."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from vaultdr.evidence.report import CSS
from vaultdr.evidence.schema import EvidenceError, load_evidence


def _runs(reports_dir: Path) -> list[tuple[Path, dict[str, Any] | None, str | None]]:
    found: list[tuple[Path, dict[str, Any] | None, str | None]] = []
    for run_dir in sorted((p for p in reports_dir.iterdir() if p.is_dir()), reverse=True):
        if not (run_dir / "evidence.json").exists():
            continue
        try:
            found.append((run_dir, load_evidence(run_dir), None))
        except EvidenceError as exc:
            found.append((run_dir, None, exc.message))
    found.sort(key=lambda r: (r[1] or {}).get("started_at", r[0].name), reverse=True)
    return found


def trend_svg(points: list[float | None], objective: float | None) -> str:
    """RTO per run, oldest to newest; the objective as a dashed line."""
    width, height, pad = 260, 60, 6
    values = [p for p in points if p is not None]
    top = max(values + ([objective] if objective else []) + [1.0]) * 1.1
    n = max(len(points) - 1, 1)

    def xy(i: int, v: float) -> tuple[float, float]:
        return pad + i * (width - 2 * pad) / n, height - pad - v / top * (height - 2 * pad)

    parts = [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">']
    if objective:
        _x, y = xy(0, objective)
        parts.append(
            f'<line x1="{pad}" y1="{y:.1f}" x2="{width - pad}" y2="{y:.1f}" stroke="#b3261e" '
            'stroke-dasharray="4 3"/>'
        )
    line = [xy(i, v) for i, v in enumerate(points) if v is not None]
    if len(line) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in line)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#2563eb" stroke-width="2"/>')
    for x, y in line:
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#2563eb"/>')
    parts.append("</svg>")
    return "".join(parts)


def write_index(reports_dir: Path) -> Path:
    reports_dir.mkdir(parents=True, exist_ok=True)
    runs = _runs(reports_dir)
    rows = []
    for run_dir, evidence, error in runs:
        link = f'<a href="{escape(run_dir.name)}/report.html">{escape(run_dir.name)}</a>'
        if evidence is None:
            rows.append(
                f'<tr><td>{link}</td><td colspan=5 class="bad">invalid: {escape(error or "")}</td></tr>'
            )
            continue
        scenarios = evidence["scenarios"]
        passed = sum(1 for s in scenarios if s["verdict"] == "passed")
        rows.append(
            f"<tr><td>{link}</td><td>{escape(evidence['started_at'])}</td>"
            f"<td>{escape(evidence['environment']['name'])}</td>"
            f"<td>{escape(str(evidence['engine'].get('kind')))} {escape(str(evidence['engine'].get('version')))}</td>"
            f'<td class="{escape(evidence["verdict"])}" style="color:#fff">{escape(evidence["verdict"])}</td>'
            f"<td>{passed} of {len(scenarios)} passed</td></tr>"
        )
    oldest_first = [ev for _d, ev, _e in reversed(runs) if ev is not None]
    ids: list[str] = []
    for ev in oldest_first:
        ids += [s["id"] for s in ev["scenarios"] if s["id"] not in ids]
    trends = []
    for sid in ids:
        points: list[float | None] = []
        objective = None
        for ev in oldest_first:
            match = next((s for s in ev["scenarios"] if s["id"] == sid), None)
            points.append(_judged(match["measurements"]) if match else None)
            if match and match["objectives"].get("rto_seconds"):
                objective = float(match["objectives"]["rto_seconds"])
        latest = next((p for p in reversed(points) if p is not None), None)
        shown = f"{latest:.2f} s" if latest is not None else "—"
        trends.append(
            f"<tr><td>{escape(sid)}</td><td>{trend_svg(points, objective)}</td>"
            f"<td class=num>{shown}</td><td class=num>{f'{objective:g} s' if objective else '—'}</td></tr>"
        )
    page = (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>vaultdr drill runs</title>"
        f"<style>{CSS}</style></head><body><h1>vaultdr drill runs</h1>"
        "<table><tr><th>run</th><th>started</th><th>environment</th><th>engine</th>"
        "<th>verdict</th><th>scenarios</th></tr>" + "".join(rows) + "</table>"
        "<h2>RTO trend per scenario</h2><p class=muted>oldest to newest; dashed: the objective</p>"
        "<table><tr><th>scenario</th><th>RTO per run</th><th>latest</th><th>objective</th></tr>"
        + "".join(trends)
        + "</table></body></html>\n"
    )
    path = reports_dir / "index.html"
    path.write_text(page)
    return path


def _judged(measurements: dict[str, Any]) -> float | None:
    """The figure a scenario's RTO objective is judged on (its objective phase, or the RTO)."""
    phase = measurements.get("objective_phase")
    value = (
        (measurements.get("phases") or {}).get(phase) if phase else measurements.get("rto_seconds")
    )
    return None if value is None else float(value)
