"""A static HTML page to review a batch of images: one sortable table row per image with its thumbnails, and notes
(the threshold's source, the unsure poses, the metrics) at the top. One file beside the images it links by relative
paths: no server, no network, no outside script.

    write_html_report(out_dir / "report.html", "demo: 20 photos", notes, rows, COLUMNS, THUMBNAILS)

Opened in a browser, the page sorts by any column on a click on its header, and records on its <body> how many of
its images failed to load (`data-images`, `data-missing`), which benchmarks/check_report.py reads in a headless
browser.
"""
from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path

from common.io import atomic_write

REPORT_NAME = "report.html"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } .notes li { margin: 0.2em 0; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 6px; text-align: left; vertical-align: middle; }
th { background: #f0f0f0; cursor: pointer; user-select: none; position: sticky; top: 0; }
th.sorted-asc::after { content: " \\25B2"; } th.sorted-desc::after { content: " \\25BC"; }
td img { width: 112px; height: auto; image-rendering: pixelated; display: block; }
tr.defective td.verdict, tr.unsure td.unsure { color: #b00; font-weight: bold; }
"""

_SCRIPT = """
function sortBy(th) {
  const table = th.closest('table'), body = table.tBodies[0], col = th.cellIndex;
  const asc = !th.classList.contains('sorted-asc');
  table.querySelectorAll('th').forEach(h => h.classList.remove('sorted-asc', 'sorted-desc'));
  th.classList.add(asc ? 'sorted-asc' : 'sorted-desc');
  const key = tr => tr.cells[col].dataset.value;
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
    const c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y, undefined, {numeric: true}) : nx - ny;
    return asc ? c : -c;
  });
  rows.forEach(r => body.appendChild(r));
}
window.addEventListener('load', () => {
  const images = Array.from(document.images);
  document.body.dataset.images = images.length;
  document.body.dataset.missing = images.filter(i => !i.complete || i.naturalWidth === 0).length;
});
"""


def _cell(value) -> tuple[str, str]:
    """(the shown text, the sort key) of a table value."""
    if value is None:
        return "", ""
    if isinstance(value, bool):
        return ("yes" if value else "no"), str(int(value))
    if isinstance(value, float):
        return f"{value:.3f}", repr(value)
    return str(value), str(value)


def write_html_report(path: str | os.PathLike, title: str, notes: Sequence[str], rows: Sequence[dict],
                      columns: Sequence[tuple[str, str]], thumbnails: Sequence[tuple[str, str]],
                      row_class=None) -> Path:
    """Write the page at `path` (atomically). `columns`/`thumbnails`: (row key, header) pairs; a thumbnail's value
    is an image path (as any path: absolute, or relative to the working folder) or None, linked relative to the
    page so that the folder can be moved; `notes` are plain-text lines shown as a
    list at the top; `row_class(row)` may give CSS classes ('defective', 'unsure') per row."""
    path = Path(path)
    folder = path.parent
    head = "".join(f"<th onclick='sortBy(this)'>{html.escape(label)}</th>" for _, label in columns)
    head += "".join(f"<th>{html.escape(label)}</th>" for _, label in thumbnails)
    body = []
    for row in rows:
        cells = []
        for key, _ in columns:
            text, value = _cell(row.get(key))
            cells.append(f"<td class='{html.escape(key)}' data-value='{html.escape(value, quote=True)}'>"
                         f"{html.escape(text)}</td>")
        for key, label in thumbnails:
            image = row.get(key)
            if image:
                href = html.escape(_relative(image, folder), quote=True)
                cells.append(f"<td><a href='{href}'><img src='{href}' alt='{html.escape(label, quote=True)}' "
                             "loading='eager'></a></td>")
            else:
                cells.append("<td></td>")
        classes = html.escape(" ".join(row_class(row)) if row_class else "", quote=True)
        body.append(f"<tr class='{classes}'>{''.join(cells)}</tr>")
    items = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
    page = (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
            f"<ul class='notes'>{items}</ul>\n<table><thead><tr>{head}</tr></thead>\n<tbody>\n"
            + "\n".join(body) + "\n</tbody></table>\n</body></html>\n")
    atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path


def _relative(image, folder: Path) -> str:
    """An image's path (absolute, or relative to the working folder like any path) as the page links it:
    relative to the page's folder, with forward slashes."""
    return Path(os.path.relpath(Path(image).resolve(), folder.resolve())).as_posix()
