"""HTML building blocks of the run report: escaping, tables, notes, images, the page.

Every function returns HTML text with its inputs escaped; `page` wraps the
report's elements in a self-contained page (inline CSS, and a script that
counts the loaded images for the headless-browser test; no network references).
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1400px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; vertical-align: top; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #777; font-style: italic; } .error { color: #b00; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.85em; }
.meta { color: #555; }
"""

# Counts the images once everything has loaded; the headless-browser test reads these.
_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (im) { return im.complete && im.naturalWidth > 0; }).length;
  document.body.dataset.imagesLoaded = String(ok);
  document.body.dataset.imagesBroken = String(imgs.length - ok);
  document.body.dataset.ready = '1';
});
"""


def escape(x: Any) -> str:
  """HTML-escaped `str(x)`.

  Args:
    x: any value.

  Returns:
    `str(x)` with &, <, >, and both quotes escaped.
  """
  return html.escape(str(x), quote=True)


def table_html(header: Sequence[str], rows: Sequence[Sequence[Any]], table_id: str = '') -> str:
  """An HTML table; cells are escaped, numeric-looking cells right-aligned.

  Args:
    header: column titles.
    rows: one sequence of already formatted cell texts per row.
    table_id: the table's `id` attribute, if any.

  Returns:
    The `<table>` element as text.
  """
  id_attr = f' id="{escape(table_id)}"' if table_id else ''
  head = ''.join(f'<th>{escape(h)}</th>' for h in header)
  body = []
  for row in rows:
    cells = []
    for cell in row:
      text = str(cell)
      numeric = re.fullmatch(r'[-+]?[\d,]*\.?\d+(e[-+]?\d+)?|–', text) is not None
      cells.append(
        f'<td class="num">{escape(text)}</td>' if numeric else f'<td>{escape(text)}</td>'
      )
    body.append(f'<tr>{"".join(cells)}</tr>')
  return (
    f'<table{id_attr}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
    + '\n'.join(body)
    + ('\n</tbody>\n</table>')
  )


def note(text: str, cls: str = 'note') -> str:
  """A short escaped note paragraph.

  Args:
    text: the note.
    cls: its CSS class: 'note' (grey, italic) or 'error' (red).

  Returns:
    The `<p>` element as text.
  """
  return f'<p class="{cls}">{escape(text)}</p>'


def img(name: str, alt: str) -> str:
  """An `<img>` of a PNG beside the report.

  Args:
    name: the PNG's file name in the report folder.
    alt: the image's alternative text.

  Returns:
    The `<img>` element as text.
  """
  return f'<img src="{escape(name)}" alt="{escape(alt)}">'


def page(title: str, body: Sequence[str]) -> str:
  """A whole HTML page: the report's inline style and script, then `body`.

  Args:
    title: the page's `<title>`, escaped here.
    body: the elements of `<body>`, already HTML, one per line.

  Returns:
    The page's text.
  """
  return (
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    f'<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n'
    f'<script>{_SCRIPT}</script>\n</head>\n<body>\n' + '\n'.join(body) + '\n</body>\n</html>\n'
  )
