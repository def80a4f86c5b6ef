"""A corpus of documents of mixed types and sizes, deterministic from a seed.

Writes ``ROOT/<source>/<type>/<n>-<slug>.<ext>`` for three sources (tenants) of
unequal size, with PDFs made by fpdf2, DOCX by python-docx, and HTML, Markdown and
plain text; about 1 % are corrupt and a few are huge. A few known phrases are
planted in known files. ``ROOT/.tenure-corpus.json`` (the manifest) lists the
corrupt files, the huge ones and where each phrase is; it is also how a second
run with the same seed and count knows the corpus is already there.

Each document's content comes from its own random generator seeded with
``(seed, n)``, so the corpus is the same however many processes write it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST = ".tenure-corpus.json"
SOURCES = (("acme", 55), ("globex", 30), ("initech", 15))
TYPES = (("text", 30), ("markdown", 25), ("html", 25), ("docx", 12), ("pdf", 8))
EXT = {"text": "txt", "markdown": "md", "html": "html", "docx": "docx", "pdf": "pdf"}

#: Phrases planted in one known file of each type; no word of them is in WORDS.
PLANTED = {
    "pdf": "saffron lighthouse protocol",
    "docx": "obsidian walrus treaty",
    "html": "cobalt orchard ledger",
    "markdown": "juniper tramway symphony",
    "text": "marble heron cipher",
}

WORDS = [
    "account",
    "action",
    "active",
    "advice",
    "agent",
    "answer",
    "april",
    "archive",
    "area",
    "audit",
    "balance",
    "bank",
    "basis",
    "batch",
    "billing",
    "board",
    "branch",
    "budget",
    "build",
    "buyer",
    "cable",
    "call",
    "capacity",
    "carrier",
    "case",
    "cash",
    "catalog",
    "change",
    "channel",
    "charge",
    "check",
    "claim",
    "client",
    "cloud",
    "code",
    "column",
    "comment",
    "contract",
    "copy",
    "cost",
    "count",
    "course",
    "credit",
    "customer",
    "cycle",
    "data",
    "date",
    "deal",
    "debit",
    "delivery",
    "demand",
    "deposit",
    "design",
    "detail",
    "device",
    "digital",
    "discount",
    "dispatch",
    "draft",
    "driver",
    "east",
    "energy",
    "engine",
    "entry",
    "estimate",
    "event",
    "export",
    "factor",
    "feature",
    "field",
    "figure",
    "file",
    "filter",
    "finance",
    "fleet",
    "forecast",
    "format",
    "freight",
    "fund",
    "gross",
    "growth",
    "guide",
    "hardware",
    "import",
    "income",
    "index",
    "input",
    "insurance",
    "interest",
    "inventory",
    "invoice",
    "issue",
    "item",
    "journal",
    "label",
    "ledger",
    "level",
    "license",
    "limit",
    "line",
    "loan",
    "logistics",
    "machine",
    "margin",
    "market",
    "matter",
    "measure",
    "meeting",
    "memo",
    "method",
    "metric",
    "model",
    "module",
    "month",
    "network",
    "north",
    "note",
    "notice",
    "number",
    "offer",
    "office",
    "operation",
    "order",
    "output",
    "owner",
    "package",
    "panel",
    "parcel",
    "partner",
    "payment",
    "period",
    "permit",
    "phase",
    "plan",
    "platform",
    "policy",
    "portal",
    "price",
    "process",
    "product",
    "profit",
    "project",
    "proposal",
    "quarter",
    "quota",
    "range",
    "rate",
    "record",
    "refund",
    "region",
    "release",
    "report",
    "request",
    "resource",
    "result",
    "retail",
    "revenue",
    "review",
    "risk",
    "route",
    "sale",
    "sample",
    "schedule",
    "sector",
    "security",
    "segment",
    "service",
    "share",
    "shipment",
    "signal",
    "site",
    "source",
    "south",
    "spending",
    "staff",
    "standard",
    "statement",
    "status",
    "stock",
    "storage",
    "store",
    "summary",
    "supplier",
    "supply",
    "support",
    "survey",
    "system",
    "target",
    "tariff",
    "task",
    "team",
    "tender",
    "term",
    "total",
    "trade",
    "transfer",
    "trend",
    "update",
    "usage",
    "value",
    "vendor",
    "volume",
    "warehouse",
    "week",
    "west",
    "window",
    "yield",
]


@dataclass
class Manifest:
    seed: int
    count: int
    files: list[str] = field(default_factory=list)
    corrupt: dict[str, str] = field(default_factory=dict)  # path -> how it is broken
    huge: list[str] = field(default_factory=list)
    planted: dict[str, str] = field(default_factory=dict)  # phrase -> path

    def save(self, root: Path) -> None:
        (root / MANIFEST).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, root: Path) -> Manifest | None:
        try:
            return cls(**json.loads((root / MANIFEST).read_text()))
        except (OSError, ValueError, TypeError):
            return None


@dataclass(frozen=True)
class Spec:
    """One document to write (picklable, for the writer processes)."""

    n: int
    seed: int
    path: str
    doc_type: str
    corrupt: str = ""
    huge: bool = False
    phrase: str = ""


def _pick(rng: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    names = [n for n, _ in weighted]
    return rng.choices(names, weights=[w for _, w in weighted])[0]


def plan(root: Path, count: int, seed: int) -> tuple[list[Spec], Manifest]:
    """Decide every document's type, source, name, and which are corrupt, huge or planted."""
    rng = random.Random(seed)
    kinds = [(_pick(rng, TYPES), _pick(rng, SOURCES)) for _ in range(count)]
    n_corrupt = max(3, count // 100)
    broken_kinds = ("pdf", "docx", "text")
    corrupt: dict[int, str] = {}
    # Corrupt files of each breakable type first, so even a small corpus has one of each.
    for i in range(n_corrupt):
        kind = broken_kinds[i % len(broken_kinds)]
        pool = [n for n, (k, _) in enumerate(kinds) if k == kind and n not in corrupt]
        if not pool:
            pool = [n for n in range(count) if n not in corrupt]
            kinds[pool[0]] = (kind, kinds[pool[0]][1])
        corrupt[rng.choice(pool)] = kind
    huge: set[int] = set()
    if count >= 40:
        for kind in ("text", "html", "pdf"):
            pool = [n for n, (k, _) in enumerate(kinds) if k == kind and n not in corrupt]
            if pool:
                huge.add(rng.choice(pool))
    planted: dict[int, str] = {}
    for kind, phrase in PLANTED.items():
        pool = [
            n for n, (k, _) in enumerate(kinds) if k == kind and n not in corrupt and n not in huge
        ]
        if pool:
            planted[rng.choice(pool)] = phrase
    specs: list[Spec] = []
    manifest = Manifest(seed=seed, count=count)
    for n, (kind, source) in enumerate(kinds):
        slug = "-".join(random.Random(f"{seed}:{n}:name").sample(WORDS, 2))
        rel = f"{source}/{kind}/{n:05d}-{slug}.{EXT[kind]}"
        spec = Spec(
            n, seed, str(root / rel), kind, corrupt.get(n, ""), n in huge, planted.get(n, "")
        )
        specs.append(spec)
        manifest.files.append(spec.path)
        if spec.corrupt:
            manifest.corrupt[spec.path] = f"{kind} with broken bytes"
        if spec.huge:
            manifest.huge.append(spec.path)
        if spec.phrase:
            manifest.planted[spec.phrase] = spec.path
    return specs, manifest


# ------------------------------------------------------------------------- content


def _sentence(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(6, 16))
    return " ".join(words).capitalize() + "."


def _paragraph(rng: random.Random) -> str:
    return " ".join(_sentence(rng) for _ in range(rng.randint(3, 7)))


def _paragraphs(rng: random.Random, spec: Spec, base: int) -> list[str]:
    count = base * (60 if spec.huge else 1) + rng.randint(0, base)
    paras = [_paragraph(rng) for _ in range(count)]
    if spec.phrase:
        at = rng.randrange(len(paras))
        paras[at] = f"{paras[at]} The {spec.phrase} applies here."
    return paras


def _title(rng: random.Random, spec: Spec) -> str:
    return " ".join(w.capitalize() for w in rng.sample(WORDS, 3)) + f" {spec.n}"


def _write_text(spec: Spec, rng: random.Random, path: Path) -> None:
    paras = _paragraphs(rng, spec, 6 if not spec.huge else 120)
    path.write_text(_title(rng, spec) + "\n\n" + "\n\n".join(paras) + "\n")


def _write_markdown(spec: Spec, rng: random.Random, path: Path) -> None:
    paras = _paragraphs(rng, spec, 5)
    out = [f"# {_title(rng, spec)}", ""]
    for i, para in enumerate(paras):
        if i and i % 3 == 0:
            out += [f"## {' '.join(rng.sample(WORDS, 2)).title()}", ""]
        out += [para, ""]
        if rng.random() < 0.2:
            out += [f"- **{rng.choice(WORDS)}**: {_sentence(rng)}" for _ in range(3)] + [""]
        if rng.random() < 0.1:
            out += ["```", f"{rng.choice(WORDS)} = {rng.randint(1, 999)}", "```", ""]
    path.write_text("\n".join(out))


def _write_html(spec: Spec, rng: random.Random, path: Path) -> None:
    title = _title(rng, spec)
    paras = _paragraphs(rng, spec, 6 if not spec.huge else 40)
    body = "\n".join(
        f"<p>{p}</p>" if i % 4 else f"<h2>{rng.choice(WORDS).title()}</h2>\n<p>{p}</p>"
        for i, p in enumerate(paras)
    )
    links = "".join(f'<a href="/{w}">{w}</a> ' for w in rng.sample(WORDS, 5))
    path.write_text(
        f"<!doctype html>\n<html><head><meta charset=utf-8><title>{title}</title>"
        "<style>body { font-family: sans-serif }</style>"
        "<script>var tracking = 'never indexed';</script></head>\n"
        f"<body><nav>{links}</nav><h1>{title}</h1>\n{body}\n</body></html>\n"
    )


def _write_docx(spec: Spec, rng: random.Random, path: Path) -> None:
    import docx

    document = docx.Document()
    title = _title(rng, spec)
    document.core_properties.title = title
    document.core_properties.author = rng.choice(("Ada", "Grace", "Alan", "Edsger"))
    document.add_heading(title, 1)
    for para in _paragraphs(rng, spec, 5):
        document.add_paragraph(para)
    table = document.add_table(rows=2, cols=2)
    for cell in table._cells:
        cell.text = rng.choice(WORDS)
    document.save(str(path))


def _write_pdf(spec: Spec, rng: random.Random, path: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    title = _title(rng, spec)
    pdf.set_title(title)
    pdf.set_author(rng.choice(("Ada", "Grace", "Alan", "Edsger")))
    pdf.set_compression(not spec.huge)
    pdf.add_page()
    pdf.set_font("Helvetica", style="B", size=14)
    pdf.multi_cell(0, 8, title)
    pdf.set_font("Helvetica", size=10)
    pdf.write(5, "\n\n".join(_paragraphs(rng, spec, 4 if not spec.huge else 10)))
    pdf.output(str(path))


def _write_corrupt(spec: Spec, rng: random.Random, path: Path) -> None:
    junk = rng.randbytes(2048)
    if spec.corrupt == "pdf":
        path.write_bytes(b"%PDF-1.7\n" + junk.replace(b"%%EOF", b""))
    elif spec.corrupt == "docx":
        path.write_bytes(b"PK\x03\x04" + junk)  # a zip header, then nothing a zip has
    else:
        path.write_bytes(b"Quarterly notes\n" + b"\xff\xfe\xc3\x28" + junk)


WRITERS: dict[str, Callable[[Spec, random.Random, Path], None]] = {
    "text": _write_text,
    "markdown": _write_markdown,
    "html": _write_html,
    "docx": _write_docx,
    "pdf": _write_pdf,
}


def write_one(spec: Spec) -> None:
    rng = random.Random(f"{spec.seed}:{spec.n}")
    path = Path(spec.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if spec.corrupt:
        _write_corrupt(spec, rng, path)
    else:
        WRITERS[spec.doc_type](spec, rng, path)


def _write_chunk(specs: list[Spec]) -> int:
    for spec in specs:
        write_one(spec)
    return len(specs)


def generate(
    root: Path | str,
    count: int = 2000,
    seed: int = 7,
    *,
    processes: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Manifest:
    """Write the corpus into ``root`` (reused as is if the same seed and count are there)."""
    root = Path(root).resolve()
    specs, manifest = plan(root, count, seed)
    existing = Manifest.load(root)
    if (
        existing is not None
        and existing == manifest
        and all(os.path.exists(f) for f in manifest.files)
    ):
        if progress:
            progress(count)
        return existing
    if root.exists():
        for source, _ in SOURCES:
            shutil.rmtree(root / source, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    workers = processes or min(2, os.cpu_count() or 1)
    chunks = [specs[i : i + 50] for i in range(0, len(specs), 50)]
    if workers <= 1:
        for chunk in chunks:
            done = _write_chunk(chunk)
            if progress:
                progress(done)
    else:
        with ProcessPoolExecutor(workers) as pool:
            for done in pool.map(_write_chunk, chunks):
                if progress:
                    progress(done)
    manifest.save(root)
    return manifest
