"""Seed 000 Table 2 shape: rows = categories, columns precision / sensitivity / F1 (percent)."""

from __future__ import annotations

COLUMNS = ("precision", "sensitivity", "f1")
HEADERS = ("Category", "Precision", "Sensitivity", "F1")


def pixel_table_rows(result: dict) -> list[tuple[str, ...]]:
    """Table rows as strings: each category, "Average", "Average (w/o decoys)", "Skeleton
    (pooled)", then lesion classes. Takes :func:`evaluate_dataset`'s dict or its "pixel" part."""
    pixel = result.get("pixel", result)
    per_class = pixel["per_class"]
    anatomy = [n for n, m in per_class.items() if m.get("kind") != "lesion"]
    lesions = [n for n, m in per_class.items() if m.get("kind") == "lesion"]
    rows = [(n, *(_pct(per_class[n][c]) for c in COLUMNS)) for n in anatomy]
    for label, key in (
        ("Average", "mean"),
        ("Average (w/o decoys)", "mean_without_decoys"),
        ("Skeleton (pooled)", "skeleton"),
    ):
        rows.append((label, *(_pct(pixel[key][c]) for c in COLUMNS)))
    # lesions come last: the averages above describe the anatomy only
    rows += [(n, *(_pct(per_class[n][c]) for c in COLUMNS)) for n in lesions]
    return rows


def format_pixel_table(result: dict) -> str:
    """A Markdown table of pixel-wise metrics in percent; "-" where a measure is undefined (a
    class that never occurs, sensitivity without ground truth, precision without predictions)."""
    rows = pixel_table_rows(result)
    widths = [max(len(r[i]) for r in [HEADERS, *rows]) for i in range(len(HEADERS))]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True)) + " |",
        "| " + " | ".join(["-" * widths[0]] + ["-" * (w - 1) + ":" for w in widths[1:]]) + " |",
    ]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"
