"""A small document model (headings, paragraphs, bullets, tables, figures, code) and its two renderings:
Markdown whose relative links can be given a prefix, and one standalone HTML page with its own CSS.

Inline text may use `code`, **bold** and [text](href); both renderings understand them.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass
class Table:
    id: str
    frame: pd.DataFrame
    row_classes: list | None = None
    caption: str = ""


@dataclass
class Document:
    """An ordered list of blocks; each block is a tuple whose first item names its kind."""

    title: str
    blocks: list = field(default_factory=list)

    def h(self, level: int, text: str, anchor: str):
        self.blocks.append(("h", level, text, anchor))

    def p(self, text: str, cls: str = ""):
        self.blocks.append(("p", text, cls))

    def bullets(self, items: list[str]):
        self.blocks.append(("ul", items))

    def table(self, table: Table):
        self.blocks.append(("table", table))

    def figure(self, src: str, alt: str, caption: str, cls: str = ""):
        self.blocks.append(("figure", src, alt, caption, cls))

    def code(self, text: str, summary: str = ""):
        self.blocks.append(("code", text, summary))

    def to_markdown(self, prefix: str = "") -> str:
        """Markdown; ``prefix`` is put before every relative link and image path."""
        out = [f"# {self.title}", ""]
        for block in self.blocks:
            out += _md_block(block, prefix)
        return "\n".join(out)

    def to_html(self) -> str:
        """A standalone page: the CSS inline, a table of contents of the level-2 headings."""
        toc = [
            f'<li class="toc{b[1]}"><a href="#{b[3]}">{html.escape(b[2])}</a></li>'
            for b in self.blocks
            if b[0] == "h" and b[1] == 2
        ]
        body = [_html_block(block) for block in self.blocks]
        return HTML_PAGE.format(title=html.escape(self.title), toc="\n".join(toc), body="\n".join(body))


# --------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------


def _md_block(block: tuple, prefix: str) -> list[str]:
    """The lines of one block, each block followed by an empty line."""
    kind = block[0]
    if kind == "h":
        return [f"{'#' * block[1]} {block[2]}", ""]
    if kind == "p":
        return [_md_links(block[1], prefix), ""]
    if kind == "ul":
        return [f"- {_md_links(i, prefix)}" for i in block[1]] + [""]
    if kind == "table":
        t = block[1]
        caption = [_md_links(t.caption, prefix), ""] if t.caption else []
        return caption + [_md_table(t.frame), ""]
    if kind == "figure":
        return [f"![{block[2]}]({_prefixed(block[1], prefix)})", "", f"*{_md_links(block[3], prefix)}*", ""]
    if kind == "code":
        summary = [f"{block[2]}:", ""] if block[2] else []
        return summary + ["```", block[1].rstrip(), "```", ""]
    return []


def _prefixed(href: str, prefix: str) -> str:
    # absolute URLs, anchors and absolute paths stay as they are
    if not prefix or re.match(r"^([a-z]+:|#|/)", href):
        return href
    return prefix + href


def _md_links(text: str, prefix: str) -> str:
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", lambda m: f"[{m.group(1)}]({_prefixed(m.group(2), prefix)})", text)


def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "n/a" if np.isnan(value) else f"{value:.4g}"
    return str(value)


def _md_table(frame: pd.DataFrame) -> str:
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------------


def _html_block(block: tuple) -> str:
    kind = block[0]
    if kind == "h":
        return f'<h{block[1]} id="{block[3]}">{html.escape(block[2])}</h{block[1]}>'
    if kind == "p":
        cls = f' class="{block[2]}"' if block[2] else ""
        return f"<p{cls}>{_inline_html(block[1])}</p>"
    if kind == "ul":
        return "<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in block[1]) + "</ul>"
    if kind == "table":
        return _html_table(block[1])
    if kind == "figure":
        cls = f' class="{block[4]}"' if block[4] else ""
        return (
            f'<figure{cls}><img src="{html.escape(block[1])}" alt="{html.escape(block[2])}">'
            f"<figcaption>{_inline_html(block[3])}</figcaption></figure>"
        )
    if kind == "code":
        pre = f"<pre>{html.escape(block[1])}</pre>"
        return f"<details><summary>{html.escape(block[2])}</summary>{pre}</details>" if block[2] else pre
    return ""


def _inline_html(text: str) -> str:
    """Escape, then render `code`, **bold** and [text](href)."""
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", lambda m: f'<a href="{html.escape(m.group(2))}">{m.group(1)}</a>', out)


def _is_numeric_text(text: str) -> bool:
    # numbers, "mean ± std" and n/a are right-aligned, also with a "(7 of 8 folds, 9 of 11 sections)" note
    return bool(
        re.match(
            r"^(-?[0-9.]+(e-?\d+)?( ± [0-9.]+)?|n/a)"
            r"( \(\d+ of \d+ (folds|sections)(, \d+ of \d+ sections)?\))?$",
            text,
        )
    )


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in t.frame.columns)
    rows = []
    for i, row in enumerate(t.frame.itertuples(index=False)):
        cls = f' class="{t.row_classes[i]}"' if t.row_classes and t.row_classes[i] else ""
        cells = []
        for v in row:
            text = _cell(v)
            num = ' class="num"' if _is_numeric_text(text) else ""
            cells.append(f"<td{num}>{_inline_html(text)}</td>")
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    caption = f"<caption>{_inline_html(t.caption)}</caption>" if t.caption else ""
    return (
        f'<div class="scroll"><table id="{t.id}">{caption}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


# the row classes it styles: this-run, optimistic (selected on the test fold), published, group-start;
# figure class: spatial; paragraph class: note
HTML_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 1em 2em 4em; color: #222; line-height: 1.45; }}
h1 {{ border-bottom: 2px solid #444; }} h2 {{ border-bottom: 1px solid #ccc; margin-top: 2em; }}
table {{ border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }}
th {{ background: #f0f0f0; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
tr.this-run td {{ background: #e8f3ff; font-weight: 600; }}
tr.this-run.optimistic td {{ background: #fff0e0; font-style: italic; }}
tr.published td {{ color: #444; }}
tr.group-start td {{ border-top: 2px solid #666; }}
#table1 td {{ white-space: nowrap; }}
div.scroll {{ overflow-x: auto; }}
caption {{ caption-side: top; text-align: left; font-style: italic; padding-bottom: 0.3em; }}
figure {{ display: inline-block; margin: 0.5em 1em 1em 0; vertical-align: top; }}
figure img {{ max-width: 100%; border: 1px solid #ddd; }}
figcaption {{ font-size: 0.85em; color: #555; max-width: 760px; }}
figure.spatial {{ width: 560px; }} figure.spatial img {{ width: 100%; }}
p.note {{ background: #fff6dd; border-left: 4px solid #e0a800; padding: 0.5em 0.8em; }}
code {{ background: #f4f4f4; padding: 0 0.2em; }}
pre {{ background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }}
nav ul {{ columns: 2; }}
</style>
</head>
<body>
<h1>{title}</h1>
<nav><ul>
{toc}
</ul></nav>
{body}
</body>
</html>
"""
