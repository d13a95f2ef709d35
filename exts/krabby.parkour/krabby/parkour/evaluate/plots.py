"""Two small SVG plots of an evaluation, written as text (no plotting library needed on a robot or CI box).

- success rate vs difficulty, one line per terrain and perturbation;
- distance distribution, one row of dots per terrain and perturbation (mean as a bar).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any
from xml.sax.saxutils import escape

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")
W, H, LEFT, RIGHT, TOP, BOTTOM = 640, 360, 60, 170, 30, 45


def _svg(body: list[str], title: str, height: int = H) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="sans-serif" font-size="11">\n'
            f'<rect width="{W}" height="{height}" fill="white"/>\n'
            f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="13">{escape(title)}</text>\n' + "\n".join(body) + "\n</svg>\n")


def success_svg(records: list[dict[str, Any]]) -> str:
    series: dict[tuple[str, str], dict[float, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        series[(r["terrain"], r["perturbation"])][float(r["difficulty"])].append(bool(r["success"]))
    diffs = sorted({d for s in series.values() for d in s})
    lo, hi = (diffs[0], diffs[-1]) if diffs and diffs[0] != diffs[-1] else (0.0, 1.0)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    x = lambda d: LEFT + (d - lo) / (hi - lo) * pw  # noqa: E731
    y = lambda s: TOP + (1.0 - s) * ph  # noqa: E731
    body = [f'<line x1="{LEFT}" y1="{TOP + ph}" x2="{LEFT + pw}" y2="{TOP + ph}" stroke="black"/>',
            f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + ph}" stroke="black"/>',
            f'<text x="{LEFT + pw / 2}" y="{H - 8}" text-anchor="middle">difficulty</text>',
            f'<text x="14" y="{TOP + ph / 2}" transform="rotate(-90 14 {TOP + ph / 2})" text-anchor="middle">success rate</text>']
    for v in (0.0, 0.5, 1.0):
        body.append(f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
    for d in diffs:
        body.append(f'<text x="{x(d):.1f}" y="{TOP + ph + 15}" text-anchor="middle">{d:g}</text>')
    for i, ((terrain, pert), by_d) in enumerate(sorted(series.items())):
        c = COLORS[i % len(COLORS)]
        pts = [(x(d), y(sum(v) / len(v))) for d, v in sorted(by_d.items())]
        body.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in pts)}"/>')
        body += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3.5" fill="{c}"/>' for a, b in pts]
        body.append(f'<text x="{LEFT + pw + 10}" y="{TOP + 14 * i + 10}" fill="{c}">{escape(terrain)} / {escape(pert)}</text>')
    return _svg(body, "Success rate vs difficulty")


def distance_svg(records: list[dict[str, Any]]) -> str:
    rows: dict[tuple[str, str, float], list[float]] = defaultdict(list)
    for r in records:
        rows[(r["terrain"], r["perturbation"], float(r["difficulty"]))].append(float(r["distance_m"]))
    keys = sorted(rows)
    height = TOP + BOTTOM + 22 * max(1, len(keys))
    top = max([max(v) for v in rows.values()] + [1.0])
    pw = W - LEFT - RIGHT
    x = lambda m: LEFT + 110 + m / top * (pw - 110)  # noqa: E731
    body = [f'<text x="{x(top / 2):.1f}" y="{height - 8}" text-anchor="middle">distance along the course (m)</text>']
    for m in (0.0, top / 2, top):
        body.append(f'<text x="{x(m):.1f}" y="{height - 24}" text-anchor="middle">{m:.1f}</text>')
    for i, k in enumerate(keys):
        yy = TOP + 22 * i + 12
        body.append(f'<text x="{LEFT + 104}" y="{yy + 4}" text-anchor="end">{escape(k[0])} d={k[2]:g} / {escape(k[1])}</text>')
        body.append(f'<line x1="{x(0):.1f}" y1="{yy}" x2="{x(top):.1f}" y2="{yy}" stroke="#ddd"/>')
        vals = rows[k]
        body += [f'<circle cx="{x(v):.1f}" cy="{yy}" r="3" fill="{COLORS[i % len(COLORS)]}" fill-opacity="0.6"/>' for v in vals]
        mean = sum(vals) / len(vals)
        body.append(f'<line x1="{x(mean):.1f}" y1="{yy - 7}" x2="{x(mean):.1f}" y2="{yy + 7}" stroke="black" stroke-width="2"/>')
    return _svg(body, "Distance per episode (bar: mean)", height)
