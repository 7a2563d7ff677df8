"""A small PNG line chart of a metric over the last hour, with the threshold drawn.

Embedded in alert e-mails so the reader sees the shape at a glance (a cliff, a slow climb, a
flap) without opening Grafana. Pure: points in, PNG bytes out.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, datetime

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 640, 220
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 16, 16, 28
LINE, THRESHOLD, GRID, TEXT = (31, 119, 180), (214, 39, 40), (225, 225, 225), (60, 60, 60)


def render_chart(
    points: Sequence[tuple[float, float]], threshold: float | None, unit: str = ""
) -> bytes:
    """PNG bytes of `points` (Unix time, value) with a dashed threshold line."""
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    left, right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
    top, bottom = MARGIN_TOP, HEIGHT - MARGIN_BOTTOM
    values = [v for _, v in points] + ([threshold] if threshold is not None else [])
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    low = min(low, 0.0)
    if high <= low:
        high = low + 1.0
    high += (high - low) * 0.1
    times = [t for t, _ in points]
    start, end = (min(times), max(times)) if times else (0.0, 1.0)
    if end <= start:
        end = start + 1.0

    def x(t: float) -> float:
        return left + (t - start) / (end - start) * (right - left)

    def y(v: float) -> float:
        return bottom - (v - low) / (high - low) * (bottom - top)

    for i in range(5):
        value = low + (high - low) * i / 4
        draw.line([(left, y(value)), (right, y(value))], fill=GRID)
        draw.text((4, y(value) - 6), _short(value) + unit, fill=TEXT, font=font)
    draw.rectangle([left, top, right, bottom], outline=TEXT)
    if times:
        for stamp in (start, (start + end) / 2, end):
            label = datetime.fromtimestamp(stamp, UTC).strftime("%H:%M")
            draw.text((x(stamp) - 14, bottom + 6), label, fill=TEXT, font=font)
    if threshold is not None:
        dash = 8
        position = left
        while position < right:
            draw.line([(position, y(threshold)), (min(position + dash, right), y(threshold))],
                      fill=THRESHOLD, width=2)  # fmt: skip
            position += dash * 2
    if len(points) > 1:
        draw.line([(x(t), y(v)) for t, v in points], fill=LINE, width=2)
    elif points:
        t, v = points[0]
        draw.ellipse([x(t) - 3, y(v) - 3, x(t) + 3, y(v) + 3], fill=LINE)
    buffer = io.BytesIO()
    # Not `optimize=True`: it tries every filter and compression level, 4x the time of the whole
    # chart (~30 ms instead of ~8) to save ~500 bytes of a ~3.7 KB image.
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _short(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.2f}"
