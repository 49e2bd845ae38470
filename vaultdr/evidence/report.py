"""``report.html``: one self-contained, printable page an auditor can read.

No script, no external fonts or images: inline CSS (with print rules) and an
inline SVG timeline per scenario. The page is the Jinja2 template
``templates/report.html.j2``, rendered from the typed evidence
(:class:`~vaultdr.evidence.models.Evidence`) with autoescaping on, so every text
from the evidence is escaped; this module works out what the template draws
(the timeline's geometry, the measurement rows) and formats the numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from vaultdr.evidence.models import Evidence, Measurements, Phases, ScenarioRecord
from vaultdr.evidence.schema import load_evidence_model, parse_evidence

__all__ = ["CSS", "MARKERS", "render_html", "timeline_picture", "write_report"]

REPORT = "report.html"

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

#: (phase, label, colour) of each marker on the timeline; "fault" is the fault at 0 s.
MARKERS = [
    ("fault", "fault", "#b3261e"),
    ("detected", "detected", "#d97706"),
    ("unsealed", "unsealed", "#2563eb"),
    ("leader", "leader", "#7c3aed"),
    ("restored", "restored", "#0f766e"),
    ("serving", "serving", "#1f7a3a"),
    ("auth_ready", "auth ready", "#15803d"),
    ("writing", "writing", "#0e7490"),
    ("healthy", "healthy", "#166534"),
]
#: The phases as the measurements table lists them: the model's, which are the timeline's.
PHASE_ORDER = tuple(Phases.model_fields)


def fmt(value: Any, unit: str = "s") -> str:
    """A measurement for people: ``—`` when not measured, floats to 2 decimals."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.2f} {unit}".strip()
    return f"{value} {unit}".strip()


# --- the timeline picture ---------------------------------------------------------------------
@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class Marker:
    """A phase (or the fault): a coloured line up to its own row, a dot on the axis, a label."""

    x: float
    y: int
    colour: str
    anchor: str
    dx: int
    label: str


@dataclass(frozen=True)
class TimelinePicture:
    """An SVG's geometry: an axis in seconds after the fault, one labelled row per phase."""

    width: int
    height: int
    left: int
    right: int
    axis: int
    ticks: list[Tick]
    events: list[float]  # the x of every observed change, drawn faint
    markers: list[Marker]


def _tick_step(span: float) -> float:
    for step in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300):
        if span / step <= 12:
            return float(step)
    return 600.0


def _points(scenario: ScenarioRecord) -> list[tuple[str, float]]:
    """(phase, seconds) for the fault and every phase reached."""
    phases = scenario.measurements.phases.to_dict()
    return [("fault", 0.0)] + [(k, float(v)) for k, v in phases.items() if v is not None]


def timeline_picture(scenario: ScenarioRecord) -> TimelinePicture | None:
    """What the scenario's timeline SVG draws; None when no fault was injected."""
    events = scenario.timeline
    faults = [e for e in events if e.kind.startswith("fault:")]
    if not faults and not scenario.measurements.phases.to_dict():
        return None
    points = _points(scenario)
    ends = [t for _k, t in points] + [float(e.t) for e in events if e.t >= 0]
    span = max(max(ends, default=1.0), 1.0) * 1.08
    start = -0.05 * span
    axis = 24 + len(points) * 15
    width, left, right = 900, 40, 20
    scale = (width - left - right) / (span - start)

    def x(t: float) -> float:
        return left + (t - start) * scale

    step = _tick_step(span)
    ticks, tick = [], 0.0
    while tick <= span:
        ticks.append(Tick(x(tick), f"{tick:g} s"))
        tick += step
    labels = {key: label for key, label, _colour in MARKERS}
    colours = {key: colour for key, _label, colour in MARKERS}
    at_zero = [e for e in faults if float(e.t) == 0.0]
    if at_zero:
        labels["fault"] = f"fault: {at_zero[-1].kind[6:]}"
    markers = []
    for row, (key, t) in enumerate(sorted(points, key=lambda p: p[1])):
        end = x(t) > width - 200  # near the right edge: the label goes to the left
        markers.append(
            Marker(
                x=x(t),
                y=16 + row * 15,  # a row per marker: labels never overlap
                colour=colours.get(key, "#333"),
                anchor="end" if end else "start",
                dx=-5 if end else 5,
                label=f"{labels.get(key, key)} {t:.2f} s",
            )
        )
    shown = [x(float(e.t)) for e in events if start <= e.t <= span]
    return TimelinePicture(width, axis + 30, left, right, axis, ticks, shown, markers)


# --- the tables ---------------------------------------------------------------------------------
def measurement_rows(measurements: Measurements) -> list[tuple[str, str]]:
    """(what, value) rows of a scenario's measurements table."""
    m = measurements
    rows = [("RTO", fmt(m.rto_seconds))]  # reads, logins and writes back (and staying)
    if m.objective_phase:
        name = m.objective_phase.replace("_", " ")
        rows.append((f"objective judged on: {name}", fmt(m.judged_seconds())))
    rows += [
        ("RPO", fmt(m.rpo_seconds)),
        ("writes after the snapshot (RPO)", fmt(m.rpo_writes, "")),
        ("acknowledged writes", fmt(m.acknowledged_writes, "")),
        ("lost acknowledged writes", str(len(m.lost_writes))),
    ]
    if m.unavailable_seconds is not None:  # an upgrade check's rolling upgrade
        rows += [
            ("writes refused during the upgrade, in all", fmt(m.unavailable_seconds)),
            ("longest refusal", fmt(m.longest_unavailable_seconds)),
        ]
        rows += [
            (f"upgraded {n.node} ({n.role})", fmt(n.seconds) + ("" if n.ok else " FAILED"))
            for n in m.nodes or []
        ]
    phases = m.phases.to_dict()
    rows += [(f"phase: {k.replace('_', ' ')}", fmt(phases[k])) for k in PHASE_ORDER if k in phases]
    return rows


def meta_rows(evidence: Evidence) -> list[tuple[str, str]]:
    """(what, value) rows of the run's facts: when, where, which vaultdr, engine and stack."""
    e, env, engine, stack = evidence, evidence.environment, evidence.engine, evidence.stack
    rows = [
        ("run", e.run_id),
        ("started / finished", f"{e.started_at} / {e.finished_at}"),
        ("environment", f"{env.name} on {env.host} ({env.platform or ''})"),
        ("vaultdr", f"{e.vaultdr.version} (commit {e.vaultdr.git_commit or 'unknown'})"),
        ("engine", f"{engine.kind} {engine.version}"),
    ]
    if engine.from_version:
        rows.append(("upgraded from", f"{engine.kind} {engine.from_version}"))
    rows += [
        (
            "stack",
            f"{stack.nodes} nodes, {stack.storage} storage, {stack.seal} seal, "
            f"cluster {stack.cluster}",
        ),
        ("configuration", f"{stack.config_file} (sha256 {(stack.config_sha256 or '')[:16]}…)"),
    ]
    return rows


# --- the page ----------------------------------------------------------------------------------------
@cache
def _templates() -> Environment:
    templates = Environment(
        loader=PackageLoader("vaultdr.evidence", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    templates.filters["fmt"] = fmt
    templates.globals.update(
        measurement_rows=measurement_rows, timeline_picture=timeline_picture, css=Markup(CSS)
    )
    return templates


def render_html(evidence: Evidence | Mapping[str, Any]) -> str:
    """The report page of ``evidence`` (an :class:`Evidence`, or a dict validated into one)."""
    e = evidence if isinstance(evidence, Evidence) else parse_evidence(evidence)
    passed = sum(1 for s in e.scenarios if s.verdict == "passed")
    page = _templates().get_template("report.html.j2")
    return page.render(evidence=e, passed=passed, meta=meta_rows(e))


def write_report(run_dir: Path) -> Path:
    """``report.html`` in ``run_dir``, from its ``evidence.json``."""
    path = run_dir / REPORT
    path.write_text(render_html(load_evidence_model(run_dir)))
    return path
