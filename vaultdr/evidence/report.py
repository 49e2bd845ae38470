"""``report.html``: one self-contained, printable page an auditor can read.

No script, no external fonts or images: inline CSS (with print rules) and an
inline SVG timeline per scenario. Every text from the evidence is escaped.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from vaultdr.evidence.schema import load_evidence

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330;
       margin: 2rem auto; max-width: 64rem; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ccd; }
h3 { margin-bottom: .3rem; }
table { border-collapse: collapse; width: 100%; margin: .6rem 0; }
th, td { border: 1px solid #ccd; padding: .3rem .5rem; text-align: left; vertical-align: top; }
th { background: #f1f3f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.verdict { display: inline-block; padding: .4rem 1rem; border-radius: .3rem; font-size: 1.3rem;
           font-weight: 700; color: #fff; }
.passed { background: #1f7a3a; } .failed { background: #b3261e; } .skipped { background: #777; }
td.passed, td.failed, td.skipped { color: #fff; font-weight: 700; }
.upgrade { border: 1px solid #ccd; border-left: 6px solid #1d2330; padding: .5rem 1rem; }
.ok { color: #1f7a3a; font-weight: 700; } .bad { color: #b3261e; font-weight: 700; }
.meta td:first-child { width: 12rem; color: #555; }
.scenario { page-break-inside: avoid; margin-top: 1.5rem; }
code { font-size: .9em; } .muted { color: #666; }
@media print { body { margin: 0; max-width: none; } a { color: inherit; text-decoration: none; }
               .verdict { border: 2px solid #000; color: #000; background: none; }
               td.passed, td.failed, td.skipped { color: #000; background: none; } }
"""

MARKERS = [
    ("fault", "fault", "#b3261e"),
    ("detected", "detected", "#d97706"),
    ("unsealed", "unsealed", "#2563eb"),
    ("leader", "leader", "#7c3aed"),
    ("restored", "restored", "#0f766e"),
    ("serving", "serving", "#1f7a3a"),
    ("auth_ready", "auth ready", "#15803d"),
    ("healthy", "healthy", "#166534"),
]


def _fmt(value: Any, unit: str = "s") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.2f} {unit}".strip()
    return f"{value} {unit}".strip()


def timeline_svg(scenario: dict[str, Any]) -> str:
    """A horizontal axis in seconds after the fault, one labelled marker (and row) per phase."""
    phases = (scenario.get("measurements") or {}).get("phases") or {}
    events = scenario.get("timeline") or []
    points = [("fault", 0.0)] + [(k, float(v)) for k, v in phases.items() if v is not None]
    faults = [e for e in events if str(e.get("kind", "")).startswith("fault:")]
    if not faults and not phases:
        return '<p class="muted">No fault was injected in this scenario: no timeline.</p>'
    ends = [t for _k, t in points] + [float(e["t"]) for e in events if float(e["t"]) >= 0]
    span = max(max(ends, default=1.0), 1.0) * 1.08
    start = -0.05 * span
    axis = 24 + len(points) * 15
    width, left, right, height = 900, 40, 20, axis + 30
    scale = (width - left - right) / (span - start)

    def x(t: float) -> float:
        return left + (t - start) * scale

    parts = [
        f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" '
        'aria-label="recovery timeline">',
        f'<line x1="{left}" y1="{axis}" x2="{width - right}" y2="{axis}" stroke="#333"/>',
    ]
    step = _tick_step(span)
    tick = 0.0
    while tick <= span:
        parts.append(
            f'<line x1="{x(tick):.1f}" y1="{axis - 4}" x2="{x(tick):.1f}" y2="{axis + 4}" '
            'stroke="#333"/>'
            f'<text x="{x(tick):.1f}" y="{axis + 20}" font-size="11" text-anchor="middle">'
            f"{tick:g} s</text>"
        )
        tick += step
    for event in events:  # every observed change, faint
        t = float(event["t"])
        if start <= t <= span:
            parts.append(
                f'<line x1="{x(t):.1f}" y1="{axis - 8}" x2="{x(t):.1f}" y2="{axis}" stroke="#99a"/>'
            )
    colours = {key: colour for key, _label, colour in MARKERS}
    labels = {key: label for key, label, _colour in MARKERS}
    at_zero = [e for e in faults if float(e["t"]) == 0.0]
    if at_zero:
        labels["fault"] = f"fault: {str(at_zero[-1]['kind'])[6:]}"
    for row, (key, t) in enumerate(sorted(points, key=lambda p: p[1])):
        y = 16 + row * 15  # a row per marker: labels never overlap
        colour = colours.get(key, "#333")
        anchor = "end" if x(t) > width - 200 else "start"
        dx = -5 if anchor == "end" else 5
        parts.append(
            f'<line x1="{x(t):.1f}" y1="{y - 4}" x2="{x(t):.1f}" y2="{axis}" stroke="{colour}" '
            f'stroke-width="2"/><circle cx="{x(t):.1f}" cy="{axis}" r="4" fill="{colour}"/>'
            f'<text x="{x(t) + dx:.1f}" y="{y}" font-size="12" fill="{colour}" '
            f'text-anchor="{anchor}">{escape(labels.get(key, key))} {t:.2f} s</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _tick_step(span: float) -> float:
    for step in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300):
        if span / step <= 12:
            return float(step)
    return 600.0


def _comparisons(scenario: dict[str, Any]) -> str:
    rows = []
    for c in scenario.get("comparisons") or []:
        mark = '<span class="ok">✓ met</span>' if c["met"] else '<span class="bad">✗ missed</span>'
        rows.append(
            f"<tr><td>{escape(c['name'])}</td><td class=num>{_fmt(c.get('measured'), c['unit'])}"
            f"</td><td class=num>{_fmt(c.get('objective'), c['unit'])}</td><td>{mark}</td></tr>"
        )
    if not rows:
        return '<p class="muted">No objective applies to this scenario.</p>'
    return (
        "<table><tr><th>measure</th><th>measured</th><th>objective</th><th>verdict</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _steps(scenario: dict[str, Any]) -> str:
    rows = []
    for step in scenario.get("steps") or []:
        status = escape(step["status"])
        error = f'<div class="bad">{escape(step["error"])}</div>' if step.get("error") else ""
        rows.append(
            f"<tr><td>{escape(step['keyword'])} {escape(step['text'])}{error}</td>"
            f'<td class="{status}">{status}</td>'
            f"<td class=num>{_fmt(step.get('duration_seconds'))}</td></tr>"
        )
    return (
        "<table><tr><th>step</th><th>status</th><th>duration</th></tr>" + "".join(rows) + "</table>"
    )


def _snapshot(scenario: dict[str, Any]) -> str:
    snap = (scenario.get("measurements") or {}).get("snapshot")
    if not snap:
        return ""
    skipped = "".join(
        f"<li><code>{escape(s['key'])}</code>: {escape(s['reason'])}</li>"
        for s in snap.get("skipped") or []
    )
    return (
        f"<p>Restored from <code>{escape(snap['key'])}</code> (sha256 "
        f"<code>{escape(str(snap.get('sha256', ''))[:16])}…</code>, "
        f"{_fmt(snap.get('age_seconds'))} old).</p>"
        + (f"<p>Skipped snapshots:</p><ul>{skipped}</ul>" if skipped else "")
    )


def _measurements(scenario: dict[str, Any]) -> str:
    m = scenario.get("measurements") or {}
    lost = m.get("lost_writes") or []
    cells = [
        ("RTO", _fmt(m.get("rto_seconds"))),
        ("RPO", _fmt(m.get("rpo_seconds"))),
        ("writes after the snapshot (RPO)", _fmt(m.get("rpo_writes"), "")),
        ("acknowledged writes", _fmt(m.get("acknowledged_writes"), "")),
        ("lost acknowledged writes", str(len(lost))),
    ]
    if m.get("unavailable_seconds") is not None:  # an upgrade check's rolling upgrade
        cells += [
            ("writes refused during the upgrade, in all", _fmt(m["unavailable_seconds"])),
            ("longest refusal", _fmt(m.get("longest_unavailable_seconds"))),
        ]
        cells += [
            (
                f"upgraded {n['node']} ({n['role']})",
                f"{_fmt(n['seconds'])}" + ("" if n["ok"] else " FAILED"),
            )
            for n in m.get("nodes") or []
        ]
    phases = m.get("phases") or {}
    order = ["detected", "unsealed", "leader", "restored", "serving", "auth_ready", "healthy"]
    cells += [(f"phase: {k.replace('_', ' ')}", _fmt(phases.get(k))) for k in order if k in phases]
    rows = "".join(f"<tr><td>{escape(a)}</td><td class=num>{b}</td></tr>" for a, b in cells)
    lost_rows = "".join(
        f"<li><code>{escape(str(w['key']))}</code> v{w['version']} at {escape(str(w['wall']))}</li>"
        for w in lost[:50]
    )
    return f'<table class="meta">{rows}</table>' + (
        f'<p class="bad">Lost acknowledged writes:</p><ul>{lost_rows}</ul>' if lost else ""
    )


def _upgrade(evidence: dict[str, Any]) -> str:
    """The upgrade check's verdict in words, with the server's own error line."""
    upgrade = evidence.get("upgrade")
    if not upgrade:
        return ""
    source, target = upgrade["from"], upgrade["to"]
    server = (
        f"<p>The server said: <code>{escape(upgrade['server_error'])}</code></p>"
        if upgrade.get("server_error")
        else ""
    )
    return (
        f'<div class="upgrade"><p><b>{escape(source["kind"])} {escape(source["version"])} → '
        f"{escape(target['version'])}</b>: {escape(upgrade['explanation'])}</p>{server}"
        f'<p class="muted">target binary {escape(target["source"])}, sha256 '
        f"<code>{escape(target['sha256'][:16])}…</code></p></div>"
    )


def render_html(evidence: dict[str, Any]) -> str:
    e = evidence
    scenarios = e["scenarios"]
    verdict = e["verdict"]
    summary_rows = []
    for s in scenarios:
        m = s.get("measurements") or {}
        o = s.get("objectives") or {}
        summary_rows.append(
            f'<tr><td><a href="#{escape(s["id"])}">{escape(s["feature"])}: {escape(s["name"])}</a>'
            f'</td><td class="{escape(s["verdict"])}">{escape(s["verdict"])}</td>'
            f"<td class=num>{_fmt(m.get('rto_seconds'))}</td><td class=num>{_fmt(o.get('rto_seconds'))}</td>"
            f"<td class=num>{_fmt(m.get('rpo_seconds'))}</td><td class=num>{_fmt(o.get('rpo_seconds'))}</td>"
            f"<td class=num>{len(m.get('lost_writes') or [])}</td></tr>"
        )
    stack = e.get("stack") or {}
    engine = e.get("engine") or {}
    env = e.get("environment") or {}
    meta = [
        ("run", e["run_id"]),
        ("started / finished", f"{e['started_at']} / {e['finished_at']}"),
        ("environment", f"{env.get('name')} on {env.get('host')} ({env.get('platform', '')})"),
        (
            "vaultdr",
            f"{e['vaultdr']['version']} (commit {e['vaultdr'].get('git_commit') or 'unknown'})",
        ),
        ("engine", f"{engine.get('kind')} {engine.get('version')}"),
        *(
            [("upgraded from", f"{engine.get('kind')} {engine['from_version']}")]
            if engine.get("from_version")
            else []
        ),
        (
            "stack",
            f"{stack.get('nodes')} nodes, {stack.get('storage')} storage, {stack.get('seal')} seal, "
            f"cluster {stack.get('cluster')}",
        ),
        (
            "configuration",
            f"{stack.get('config_file')} (sha256 {stack.get('config_sha256', '')[:16]}…)",
        ),
    ]
    meta_rows = "".join(f"<tr><td>{escape(a)}</td><td>{escape(str(b))}</td></tr>" for a, b in meta)
    sections = []
    for s in scenarios:
        error = f'<p class="bad">{escape(s["error"])}</p>' if s.get("error") else ""
        sections.append(
            f'<div class="scenario" id="{escape(s["id"])}"><h3>{escape(s["feature"])}: '
            f'{escape(s["name"])} <span class="verdict {escape(s["verdict"])}" style="font-size:.9rem">'
            f"{escape(s['verdict'])}</span></h3>"
            f'<p class="muted">tags: {escape(", ".join(s.get("tags") or []))} · started '
            f"{escape(str(s.get('started_at')))} · {_fmt(s.get('duration_seconds'))}</p>{error}"
            f"{_comparisons(s)}{timeline_svg(s)}{_measurements(s)}{_snapshot(s)}{_steps(s)}</div>"
        )
    artifacts = e.get("artifacts") or {}
    items = []
    if artifacts.get("junit"):
        items.append(f"JUnit XML: <code>{escape(artifacts['junit'])}</code>")
    if artifacts.get("allure_results"):
        items.append(f"Allure results: <code>{escape(artifacts['allure_results'])}/</code>")
    items += [
        f"Chaos Toolkit journal: <code>{escape(j)}</code>" for j in artifacts.get("journals") or []
    ]
    items.append(
        "Every file of this run is sealed in <code>MANIFEST.sha256</code> "
        "(check with <code>vaultdr evidence verify DIR</code> or <code>sha256sum -c</code>)."
    )
    passed = sum(1 for s in scenarios if s["verdict"] == "passed")
    title = "Upgrade check evidence" if e.get("upgrade") else "DR drill evidence"
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>vaultdr drill {escape(e['run_id'])}: {escape(verdict)}</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>{title}</h1><p class=muted>vaultdr run {escape(e['run_id'])}</p>"
        f'<p><span class="verdict {escape(verdict)}">{escape(verdict.upper())}</span> '
        f"{passed} of {len(scenarios)} scenarios passed</p>"
        f"{_upgrade(e)}"
        f'<table class="meta">{meta_rows}</table>'
        "<h2>Scenarios: measured against objectives</h2>"
        "<table><tr><th>scenario</th><th>verdict</th><th>RTO</th><th>RTO objective</th>"
        "<th>RPO</th><th>RPO objective</th><th>lost writes</th></tr>"
        + "".join(summary_rows)
        + "</table><h2>Each scenario</h2>"
        + "".join(sections)
        + "<h2>Artifacts</h2><ul>"
        + "".join(f"<li>{i}</li>" for i in items)
        + "</ul></body></html>\n"
    )


def write_report(run_dir: Path) -> Path:
    evidence = load_evidence(run_dir)
    path = run_dir / "report.html"
    path.write_text(render_html(evidence))
    return path
