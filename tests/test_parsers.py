"""Parser fidelity: what a reader sees in a real-world file comes out of the parser, searchable.

The corpus (tests/corpus/, made by tests/corpus/make.py) holds the shapes real files
have: Markdown that wraps its sentences, HTML declaring ISO-8859-1 or windows-1252,
Shift-JIS, EUC-JP, Big5, ISO-2022-JP, Korean code page 949 and Latin-1 text, byte-order
marks, bytes that are not text, and a scanned PDF. Each phrase below is one a person
reading the file sees; it must be in the parsed text and found by the app's own search
on a real PostgreSQL, and one test runs the whole app (ingest, a real worker, search,
the failed list) over the corpus.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docx
import psycopg
import pytest
from fpdf import FPDF

from examples.documents import encodings, index, parsers
from examples.documents import ingest as ingesting
from tests.conftest import CHILD_PYTHONPATH, ROOT, eventually

CORPUS = Path(__file__).resolve().parent / "corpus"
TENURE_DOCS = [sys.executable, "-m", "examples.documents.cli"]

#: file -> phrases a reader of it sees (each one crosses a line or block edge, or holds
#: a letter a legacy encoding wrote).
PHRASES: dict[str, list[str]] = {
    "soft-breaks.md": [
        "without any license fees or royalties",
        "for any purpose without any license",
        "keeps every task ranging from",
        "on purpose: the lighthouse keeper logbook records every passing ship",
        "wraps onto a second line about the copper kettle",
        "emphasis that spans two lines and a link that wraps",
        "also wraps from one line to the next",
        "Saturn one hundred",
        "juniper tramway",
        "emerald harbour at dusk",
    ],
    "windows-crlf.md": [
        "Notes from the Zürich office",
        "serves crème brûlée every Friday",
        "the team’s favourite is the hazelnut one",
        "contracts to the front desk",
    ],
    "latin1-declared.html": [
        "Stéphane Grappelli",
        "Violoniste français de jazz",
        "joué au Quintette du Hot Club",
        "Deuxième disque",
        "café de la gare rue de la République Lyon",
    ],
    "xml-declared.htm": ["Müller’s Jahresbericht", "Die Straße nach München wird „im Frühjahr“"],
    "shift-jis.txt": ["在庫管理", "大阪本社、第三会議室", "名古屋"],
    "euc-jp.txt": ["電子書籍", "図書館からのお知らせ"],
    "big5.txt": ["倉儲系統", "臺北總公司，第二會議室"],
    "iso-2022-jp.txt": ["来週の打ち合わせについて", "福岡支店の応接室", "「出荷計画表」"],
    "uhc-chat.txt": ["똠방!!", "뷁뷁", "펲 ㈜"],
    "latin1.txt": ["Les élèves de l'école de musique répètent déjà", "salle Molière"],
    "utf8-bom.txt": ["Quarterly minutes", "revised forecast of the ferry timetable"],
    "utf16-bom.txt": ["Inventory of the north warehouse", "walnut flooring"],
}

#: Phrases searched for through the index: words (not CJK runs) that the 'english'
#: configuration makes tokens of, or CJK words standing between punctuation.
SEARCHED: dict[str, list[str]] = {
    "soft-breaks.md": [
        "without any license fees or royalties",
        "purpose without",
        "logbook records",
        "onto a second line",
        "spans two lines",
        "link that wraps",
        "juniper tramway",
        "emerald harbour",
    ],
    "windows-crlf.md": ["Zürich office", "crème brûlée every Friday", "team’s favourite"],
    "latin1-declared.html": [
        "Stéphane Grappelli",
        "violoniste français",
        "joué au Quintette",
        "République Lyon",
    ],
    "xml-declared.htm": ["Müller’s Jahresbericht", "Frühjahr gesperrt"],
    "shift-jis.txt": ["在庫管理"],
    "euc-jp.txt": ["電子書籍"],
    "big5.txt": ["倉儲系統"],
    "iso-2022-jp.txt": ["出荷計画表"],
    "latin1.txt": ["élèves de l'école", "Molière"],
    "utf8-bom.txt": ["ferry timetable"],
    "utf16-bom.txt": ["walnut flooring"],
}

#: file -> (codec, how it was found); the codec as Python names it.
ENCODINGS = {
    "latin1-declared.html": ("cp1252", "declared"),  # ISO-8859-1 read as browsers read it
    "xml-declared.htm": ("cp1252", "declared"),
    "utf8-bom.txt": ("utf-8", "bom"),
    "utf16-bom.txt": ("utf-16-le", "bom"),
    "soft-breaks.md": ("utf-8", "utf-8"),
    "windows-crlf.md": ("cp1252", "detected"),
    "latin1.txt": ("cp1252", "detected"),
    "shift-jis.txt": ("cp932", "detected"),
    "big5.txt": ("big5", "detected"),
    "iso-2022-jp.txt": ("iso2022_jp_2", "escapes"),
    "uhc-chat.txt": ("cp949", "detected"),
}

TITLES = {
    "soft-breaks.md": "Tenure for document pipelines",
    "windows-crlf.md": "Notes from the Zürich office",
    "latin1-declared.html": "Discographie de Stéphane Grappelli",
    "shift-jis.txt": "議事録 第十二回 運営委員会",
    "utf8-bom.txt": "Quarterly minutes",
    "utf16-bom.txt": "Inventory of the north warehouse",
}

NOT_TEXT = "binary.txt"
SCANNED = "scanned.pdf"


def words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize(
    ("name", "phrase"), [(name, phrase) for name, ps in PHRASES.items() for phrase in ps]
)
def test_a_phrase_a_reader_sees_is_in_the_parsed_text(name: str, phrase: str) -> None:
    out = parsers.extract(CORPUS / name)
    assert phrase in words(out.text), words(out.text)[:2000]


@pytest.mark.parametrize("name", sorted(PHRASES))
def test_no_letter_is_lost_to_a_wrong_encoding(name: str) -> None:
    out = parsers.extract(CORPUS / name)
    assert "\ufffd" not in out.text and "\ufffd" not in out.title
    assert "\ufeff" not in out.text and "\ufeff" not in out.title  # a BOM is not text


@pytest.mark.parametrize(("name", "expected"), sorted(ENCODINGS.items()))
def test_the_encoding_comes_from_the_strongest_evidence(
    name: str, expected: tuple[str, str]
) -> None:
    meta = parsers.extract(CORPUS / name).meta
    assert (meta["encoding"], meta["encoding_from"]) == expected


@pytest.mark.parametrize(("name", "title"), sorted(TITLES.items()))
def test_titles_are_what_a_reader_sees(name: str, title: str) -> None:
    assert parsers.extract(CORPUS / name).title == title


def test_bytes_that_are_not_text_fail_as_corrupt_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(
        parsers.CorruptDocument, match=r"^corrupt text: not UTF-8, nor text in any other encoding$"
    ):
        parsers.extract(CORPUS / NOT_TEXT)
    # Valid UTF-8 is still not text when it is NULs and control bytes.
    nuls = tmp_path / "records.txt"
    nuls.write_bytes(b"HDR\x00\x01\x00\x00\x02\x10\x00" * 50)
    with pytest.raises(parsers.CorruptDocument, match=r"^corrupt text: binary data, not text"):
        parsers.extract(nuls)
    controls = tmp_path / "dump.md"
    controls.write_bytes(bytes(range(1, 32)) * 20)
    with pytest.raises(parsers.CorruptDocument, match=r"^corrupt markdown: binary data, not text"):
        parsers.extract(controls)


def test_a_scanned_pdf_is_reported_as_having_no_text() -> None:
    with pytest.raises(parsers.NoText, match=r"^no text: a PDF of 1 page\(s\) without a text"):
        parsers.extract(CORPUS / SCANNED)


RUSSIAN = "Привет, как дела? Сегодня хорошая погода, и мы пойдём гулять в парк."
FRENCH = "Le café de la gare, déjà fermé, rouvre à l'été."


@pytest.mark.parametrize(
    ("head", "text", "written_in", "expected"),
    [
        (b'<meta charset="windows-1251">', RUSSIAN, "cp1251", ("cp1251", "declared")),
        (b"<META HTTP-EQUIV='Content-Type' CONTENT='text/html;charset=koi8-r'>", RUSSIAN,
         "koi8-r", ("koi8-r", "declared")),
        (b'<?xml version="1.0" encoding="ISO-8859-1"?>', FRENCH, "cp1252", ("cp1252", "declared")),
        # A label an ASCII-readable page cannot be in is read as UTF-8, which fails here.
        (b'<meta charset="utf-16">', RUSSIAN, "cp1251", ("cp1251", "detected")),
        (b'<meta charset="no-such-charset">', RUSSIAN, "cp1251", ("cp1251", "detected")),
        (b'<meta charset="rot13">', RUSSIAN, "cp1251", ("cp1251", "detected")),  # not for text
    ],
)  # fmt: skip
def test_an_html_charset_declaration_is_read_as_a_browser_reads_it(
    head: bytes, text: str, written_in: str, expected: tuple[str, str]
) -> None:
    decoded = encodings.decode(head + f"<p>{text}</p>".encode(written_in), declared=True)
    assert (decoded.encoding, decoded.found_by) == expected
    assert text in decoded.text


KOREAN = "서울 본사 창고 관리 시스템 교체 일정: 다음 회의는 부산 지사에서 열립니다."
SIMPLIFIED = "台北总公司的仓储系统将在六月上线。"


@pytest.mark.parametrize(
    ("text", "codec", "expected"),
    [
        (KOREAN, "iso2022_kr", "iso2022_kr"),
        (KOREAN, "johab", "johab"),
        (SIMPLIFIED, "hz", "hz"),
        ("お世話になっております。福岡支店", "iso2022_jp", "iso2022_jp_2"),
    ],
)  # fmt: skip
def test_seven_bit_and_rarer_cjk_encodings_are_read(text: str, codec: str, expected: str) -> None:
    decoded = encodings.decode(f"Re: {text}\n".encode(codec))
    assert decoded.text == f"Re: {text}\n" and decoded.encoding == expected


def test_ascii_that_only_looks_like_an_escape_stays_ascii() -> None:
    # '~{' in code or a lone ESC from a terminal log is not HZ or ISO-2022.
    for data in (b"if (x) ~{ y }\n", b"\x1b[31mred\x1b[0m and \x1b$B alone\n"):
        decoded = encodings.decode(data)
        assert decoded.found_by == "utf-8" and decoded.text == data.decode()


def test_a_wrong_declaration_gives_way_to_the_bytes(tmp_path: Path) -> None:
    page = tmp_path / "mislabelled.html"
    page.write_bytes(f'<meta charset="utf-8"><p>{FRENCH}</p>'.encode("cp1252"))
    out = parsers.extract(page)
    assert FRENCH in out.text
    assert out.meta["encoding_from"] == "detected"


def test_docx_and_pdf_breaks_and_pages_part_words(tmp_path: Path) -> None:
    document = docx.Document()
    para = document.add_paragraph("the first line ends with walnut")
    para.add_run().add_break()
    para.add_run("timber starts the next")
    document.add_paragraph("a paragraph of its own")
    table = document.add_table(rows=1, cols=2)
    table.cell(0, 0).text = "the cell ends in copper"
    table.cell(0, 0).add_paragraph("kettle is its second paragraph")
    table.cell(0, 1).text = "and the next cell"
    document.save(str(tmp_path / "breaks.docx"))
    text = words(parsers.extract(tmp_path / "breaks.docx").text)
    assert "walnut timber" in text and "next a paragraph" in text
    assert "copper kettle" in text and "paragraph and the next cell" in text

    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    pdf.add_page()
    pdf.multi_cell(60, 6, "a sentence long enough to wrap over several lines ends with granite")
    pdf.add_page()
    pdf.multi_cell(0, 6, "harbour opens the second page")
    pdf.output(str(tmp_path / "pages.pdf"))
    text = words(parsers.extract(tmp_path / "pages.pdf").text)
    assert "long enough to wrap over several lines" in text and "granite harbour" in text


# ------------------------------------------------------------------- through the index


@pytest.fixture(scope="module")
def indexed(admin_url: str) -> Iterator[tuple[psycopg.Connection[Any], str]]:
    """Every readable corpus file written into a fresh search index, as a worker writes it."""
    schema = f"p_{uuid.uuid4().hex[:10]}_index"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        index.ensure_index(conn, schema)
        for name in PHRASES:
            path = CORPUS / name
            out = parsers.extract(path)
            index.upsert(
                conn, path=str(path), source="corpus", doc_type=out.doc_type, title=out.title,
                meta=out.meta, body=out.text, size=path.stat().st_size, task_id=None,
                schema=schema,
            )  # fmt: skip
        try:
            yield conn, schema
        finally:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.parametrize(
    ("name", "phrase"), [(name, phrase) for name, ps in SEARCHED.items() for phrase in ps]
)
def test_search_finds_the_phrase_in_its_file(
    indexed: tuple[psycopg.Connection[Any], str], name: str, phrase: str
) -> None:
    conn, schema = indexed
    hits = index.search(conn, f'"{phrase}"', schema=schema)
    assert str(CORPUS / name) in [h.path for h in hits], (phrase, hits)


def test_the_app_indexes_the_corpus_and_reports_what_it_cannot(
    database_url: str,
    schema: str,
    new_schema: Callable[[str], str],
    workers: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the corpus ingested by the app's own command into a fresh schema
    new_schema(f"{schema}_index")
    monkeypatch.setenv("TENURE_DOCS_SCHEMA", schema)
    monkeypatch.setenv("TENURE_DATABASE_URL", database_url)
    env = {**os.environ, "PYTHONPATH": CHILD_PYTHONPATH, "COLUMNS": "200"}
    done = subprocess.run(
        [*TENURE_DOCS, "ingest", str(CORPUS)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    files = sorted(p for p in CORPUS.iterdir() if parsers.doc_type_of(p))
    # When a real worker parses and indexes every document
    worker = workers(app="examples.documents.app:reg")
    with psycopg.connect(database_url, autocommit=True) as conn:

        def finished() -> dict[str, Any] | None:
            try:
                found = ingesting.outcomes(conn)
            except psycopg.errors.UndefinedTable:
                return None
            return found if sum(found["states"].values()) == len(files) else None

        found = eventually(finished, timeout=120, interval=0.2, what=worker.log()[-2000:])
        # Then the two files that hold no text failed, each with its true reason
        assert found["states"] == {"succeeded": len(files) - 2, "failed": 2}, found
        reasons = {Path(path).name: reason for path, _, reason in found["failed"]}
        assert reasons[NOT_TEXT] == "corrupt text: not UTF-8, nor text in any other encoding"
        assert reasons[SCANNED].startswith("no text: a PDF of 1 page(s) without a text layer")
        # And what a reader sees is found by the app's search (its command, then its function)
        search = subprocess.run(
            [*TENURE_DOCS, "search", '"without any license fees or royalties"', "--json"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert search.returncode == 0, search.stdout + search.stderr
        hits = [json.loads(line)["path"] for line in search.stdout.splitlines()]
        assert hits == [str(CORPUS / "soft-breaks.md")]
        for name, phrase in [
            ("latin1-declared.html", "Stéphane Grappelli"),
            ("shift-jis.txt", "在庫管理"),
            ("euc-jp.txt", "電子書籍"),
            ("big5.txt", "倉儲系統"),
            ("latin1.txt", "élèves de l'école"),
        ]:
            paths = [h.path for h in index.search(conn, f'"{phrase}"')]
            assert str(CORPUS / name) in paths, (phrase, paths)
