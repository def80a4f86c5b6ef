"""Text and metadata out of a file, by type, with parsers from PyPI.

Every parser either returns an :class:`Extracted` or raises :class:`CorruptDocument`
naming what is wrong; nothing here parses a format by hand.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docx
import pypdf
from markdown_it import MarkdownIt
from selectolax.lexbor import LexborHTMLParser

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
    """The file cannot be parsed as its type says."""


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
    return Extracted("pdf", str(title), "\n".join(pages), {"pages": len(pages), "author": author})


def _html(path: Path, data: bytes) -> Extracted:
    tree = LexborHTMLParser(data)
    title_node = tree.css_first("title")
    title = title_node.text(strip=True) if title_node is not None else ""
    tree.strip_tags(["script", "style", "noscript", "template"])
    root = tree.body or tree.root
    text = root.text(separator=" ", strip=True) if root is not None else ""
    links = len(tree.css("a[href]"))
    if not title:
        h1 = tree.css_first("h1")
        title = h1.text(strip=True) if h1 is not None else ""
    return Extracted("html", title, text, {"links": links})


def _markdown(path: Path, data: bytes) -> Extracted:
    source = _utf8(data, "markdown")
    tokens = MarkdownIt("commonmark").parse(source)
    parts: list[str] = []
    title = ""
    headings = 0
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open":
            headings += 1
            if not title and i + 1 < len(tokens):
                title = tokens[i + 1].content
        if tok.type == "inline" and tok.children:
            parts.append(
                "".join(c.content for c in tok.children if c.type in ("text", "code_inline"))
            )
        elif tok.type in ("fence", "code_block"):
            parts.append(tok.content)
    return Extracted("markdown", title, "\n".join(parts), {"headings": headings})


def _text(path: Path, data: bytes) -> Extracted:
    text = _utf8(data, "text")
    first = next((line for line in text.splitlines() if line.strip()), "")
    return Extracted("text", first[:120], text, {"lines": text.count("\n") + 1})


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


def _utf8(data: bytes, kind: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise CorruptDocument(f"corrupt {kind}: {reason}") from None


_PARSERS = {
    "pdf": _pdf,
    "html": _html,
    "markdown": _markdown,
    "text": _text,
    "docx": _docx,
}
