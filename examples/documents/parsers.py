"""Text and metadata out of a file, by type, with parsers from PyPI.

Every parser either returns an :class:`Extracted` or raises :class:`CorruptDocument`
naming what is wrong (:class:`NoText` for a readable file with no text in it, such as a
scanned PDF); nothing here parses a format by hand.

The text is what a reader sees: every line break and block boundary (a Markdown soft
or hard break, a paragraph, list item, heading, table cell or code block; an HTML block
element or ``<br>``; a PDF page; a DOCX paragraph or cell) becomes whitespace, so words
on either side stay two words. Text, Markdown and HTML are decoded by
:mod:`examples.documents.encodings` (byte-order mark, declared charset, UTF-8, then
detection).
"""

from __future__ import annotations

import logging
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docx
import pypdf
from markdown_it import MarkdownIt
from markdown_it.token import Token
from selectolax.lexbor import LexborHTMLParser

from examples.documents import encodings

# pypdf logs a warning for every broken file it then rejects; the rejection is enough.
logging.getLogger("pypdf").setLevel(logging.ERROR)

SUFFIXES: dict[str, str] = {
    ".pdf": "pdf",
    ".html": "html",
    ".htm": "html",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".docx": "docx",
}

#: Text beyond this many characters is not indexed (PostgreSQL caps a tsvector at 1 MB).
MAX_INDEXED_CHARS = 1_000_000


class CorruptDocument(Exception):  # noqa: N818 - names the document, not an error of ours
    """The file cannot be parsed as its type says (the base of every reason not to index)."""


class NoText(CorruptDocument):
    """The file parses but holds no text to index (a scan without a text layer)."""


class UnsupportedType(CorruptDocument):
    """The file's suffix names no type we parse."""


@dataclass
class Extracted:
    doc_type: str
    title: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)


def doc_type_of(path: Path | str) -> str | None:
    """The document type for a path's suffix, None when unsupported."""
    return SUFFIXES.get(Path(path).suffix.lower())


def extract(path: Path | str) -> Extracted:
    """Parse ``path`` by its suffix; raises :class:`CorruptDocument` if it cannot."""
    p = Path(path)
    kind = doc_type_of(p)
    if kind is None:
        raise UnsupportedType(f"unsupported file type {p.suffix or '(none)'!r}")
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise CorruptDocument("file not found") from None
    try:
        out = _PARSERS[kind](p, data)
    except CorruptDocument:
        raise
    except Exception as exc:  # the parser's own complaint is the reason (imports are above)
        first = str(exc).strip().splitlines()
        raise CorruptDocument(
            f"corrupt {kind}: {type(exc).__name__}: {first[0] if first else 'unreadable'}"
        ) from exc
    out.meta.setdefault("chars", len(out.text))
    if len(out.text) > MAX_INDEXED_CHARS:
        out.text = out.text[:MAX_INDEXED_CHARS]
        out.meta["truncated"] = True
    out.title = " ".join(out.title.split())[:300] or p.stem
    return out


def _pdf(path: Path, data: bytes) -> Extracted:
    reader = pypdf.PdfReader(path, strict=False)
    pages = [page.extract_text() or "" for page in reader.pages]
    info = reader.metadata
    title = (info.title if info is not None else None) or ""
    author = (info.author if info is not None else None) or ""
    if not any(page.strip() for page in pages):
        raise NoText(
            f"no text: a PDF of {len(pages)} page(s) without a text layer "
            "(a scan or images only; run OCR on it to index it)"
        )
    return Extracted("pdf", str(title), "\n".join(pages), {"pages": len(pages), "author": author})


def _html(path: Path, data: bytes) -> Extracted:
    decoded = _decode(data, "html", declared=True)
    tree = LexborHTMLParser(decoded.text)
    title_node = tree.css_first("title")
    title = title_node.text() if title_node is not None else ""
    links = len(tree.css("a[href]"))
    text = _html_text(tree)
    if not title.strip():
        h1 = tree.css_first("h1")
        title = h1.text() if h1 is not None else ""
    return Extracted("html", title, text, {"links": links, **_encoding_meta(decoded)})


#: Elements a browser lays out as blocks (or cells): their edges separate words.
HTML_BLOCKS = (
    "address, article, aside, blockquote, body, caption, dd, details, dialog, div, dl, dt, "
    "fieldset, figcaption, figure, footer, form, h1, h2, h3, h4, h5, h6, header, hgroup, "
    "hr, li, main, nav, ol, option, p, pre, section, summary, table, tbody, td, tfoot, th, "
    "thead, tr, ul, br"
)


def _html_text(tree: LexborHTMLParser) -> str:
    """The text of ``tree``'s body as a browser shows it: inline markup joins, blocks part."""
    tree.strip_tags(["script", "style", "noscript", "template"])
    root = tree.body or tree.root
    if root is None:
        return ""
    for node in root.css(HTML_BLOCKS):
        node.insert_before("\n")
        node.insert_after("\n")
    return _tidy(root.text(separator=""))


def _tidy(text: str) -> str:
    """Runs of spaces as one, lines stripped, at most one blank line in a row."""
    lines = (" ".join(line.split()) for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


#: CommonMark plus the GitHub tables and strikethrough real READMEs are written in.
_MARKDOWN = MarkdownIt("commonmark").enable(["table", "strikethrough"])


def _markdown(path: Path, data: bytes) -> Extracted:
    decoded = _decode(data, "markdown")
    tokens = _MARKDOWN.parse(decoded.text)
    parts: list[str] = []
    title = ""
    headings = 0
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open":
            headings += 1
            if not title and i + 1 < len(tokens):
                title = _inline_text(tokens[i + 1].children or [])
        if tok.type == "inline":
            parts.append(_inline_text(tok.children or []))
        elif tok.type in ("fence", "code_block"):
            parts.append(tok.content)
        elif tok.type == "html_block":
            parts.append(_html_text(LexborHTMLParser(tok.content)))
    meta = {"headings": headings, **_encoding_meta(decoded)}
    return Extracted("markdown", title, "\n".join(parts), meta)


def _inline_text(children: list[Token]) -> str:
    """One paragraph's (or heading's, or cell's) words, a line break being a space."""
    out: list[str] = []
    for child in children:
        if child.type in ("text", "code_inline", "image"):  # an image's content: its alt text
            out.append(child.content)
        elif child.type in ("softbreak", "hardbreak") or _is_br(child):
            out.append("\n")
    return "".join(out)


def _is_br(token: Token) -> bool:
    return token.type == "html_inline" and token.content.lower().startswith("<br")


def _text(path: Path, data: bytes) -> Extracted:
    decoded = _decode(data, "text")
    text = decoded.text
    first = next((line for line in text.splitlines() if line.strip()), "")
    meta = {"lines": text.count("\n") + 1, **_encoding_meta(decoded)}
    return Extracted("text", first[:120], text, meta)


def _docx(path: Path, data: bytes) -> Extracted:
    if not zipfile.is_zipfile(path):  # python-docx would only say "package not found"
        raise CorruptDocument("corrupt docx: not a zip package")
    document = docx.Document(str(path))
    paragraphs = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            paragraphs.append(" ".join(cell.text for cell in row.cells))
    props = document.core_properties
    return Extracted(
        "docx",
        props.title or "",
        "\n".join(paragraphs),
        {"paragraphs": len(document.paragraphs), "author": props.author or ""},
    )


def _decode(data: bytes, kind: str, *, declared: bool = False) -> encodings.Decoded:
    try:
        return encodings.decode(data, declared=declared)
    except encodings.NotText as exc:
        raise CorruptDocument(f"corrupt {kind}: {exc}") from None


def _encoding_meta(decoded: encodings.Decoded) -> dict[str, str]:
    return {"encoding": decoded.encoding, "encoding_from": decoded.found_by}


_PARSERS = {
    "pdf": _pdf,
    "html": _html,
    "markdown": _markdown,
    "text": _text,
    "docx": _docx,
}
