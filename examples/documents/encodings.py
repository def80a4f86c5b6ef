"""Bytes to text for the text, Markdown and HTML parsers, in the encoding they are in.

The order of evidence, strongest first:

1. a byte-order mark (UTF-8, UTF-16, UTF-32);
2. the charset the document declares (an HTML ``<meta charset>`` or ``http-equiv``
   content type, an XML declaration), read the way browsers read labels, so
   ``ISO-8859-1`` means windows-1252;
3. the escape sequences of the 7-bit CJK encodings (ISO-2022-JP, ISO-2022-KR, HZ),
   whose bytes are ASCII and so would pass for UTF-8;
4. UTF-8, when the bytes are valid UTF-8;
5. charset-normalizer's guess among the legacy encodings (Shift-JIS, EUC-JP, Big5,
   windows-125x, ...);
6. when it has none: the double-byte CJK encodings it does not weigh (UHC/cp949 Hangul
   beyond EUC-KR, Johab, Big5-HKSCS), kept only when the decoded text is written in
   their script.

Bytes that decode in no plausible encoding, or that decode only to text full of NULs and
control characters, are not text: :class:`NotText` says which.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from charset_normalizer import from_bytes

BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE, whose BOM it starts with
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

#: Labels that browsers read as another encoding than Python's codec of that name
#: (the WHATWG Encoding Standard): a page declaring ISO-8859-1 is in windows-1252.
BROWSER_LABELS = {
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "ascii": "cp1252",
    "us-ascii": "cp1252",
    "iso-8859-9": "cp1254",
    "latin5": "cp1254",
    "tis-620": "cp874",
    "iso-8859-11": "cp874",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
    "big5": "big5hkscs",
    "x-x-big5": "big5hkscs",
}

#: When a declared encoding rejects a byte it never maps, the encoding it extends.
_FALLBACK = {"cp1252": "latin-1"}

_META = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE)
_XML = re.compile(rb"""^<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:-]+)["']""")

#: Among near-equal guesses for short single-byte text, windows-1252 wins: it is the
#: legacy encoding most Western text is in, and charset-normalizer cannot tell it from
#: its Baltic and Central European cousins on a few accented letters (French read as
#: windows-1257 turns "déjà" into "déją"). The price: undeclared Baltic text that the
#: detector finds as likely in both is read as windows-1252.
_PREFERRED = "cp1252"
_NEAR = 0.15

#: Decoded text with more than this share of control characters is binary data.
_MAX_CONTROL_SHARE = 0.05
#: Control characters text does not hold (tab, newlines, form feed and ESC, which
#: terminal colours in logs use, are left out).
_CONTROLS = re.compile("[\x01-\x08\x0e-\x1a\x1c-\x1f\x7f]")


#: The 7-bit CJK encodings, by the escape or shift sequence that only they write.
_SEVEN_BIT: tuple[tuple[re.Pattern[bytes], str], ...] = (
    (re.compile(rb"\x1b\$\)C"), "iso2022_kr"),
    (re.compile(rb"\x1b(\$[@B]|\$\(D|\(J|\$A|\$\(C)"), "iso2022_jp_2"),
    (re.compile(rb"~\{[\x21-\x7e]{2}"), "hz"),
)

#: Double-byte encodings charset-normalizer does not offer, tried in this order when
#: it offers nothing; a decoding counts only when most of its non-ASCII letters are
#: in the encoding's script.
_CJK_FALLBACK = ("cp949", "big5hkscs", "johab")
_SCRIPT_SHARE = 0.8
_CJK = re.compile(
    "[\u1100-\u11ff\u2460-\u24ff\u3000-\u303f\u3040-\u30ff\u3130-\u318f\u3200-\u32ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7a3\uf900-\ufaff\uff00-\uffef"
    "\U00020000-\U0002ffff]"
)


class NotText(ValueError):  # noqa: N818 - names the bytes, not an error of ours
    """The bytes are not text in any encoding we can recognise; the message says why."""


@dataclass(frozen=True)
class Decoded:
    text: str
    encoding: str
    #: How the encoding was found: "bom", "declared", "escapes", "utf-8" or "detected".
    found_by: str


def declared_charset(data: bytes) -> str | None:
    """The charset an HTML or XML document names in its first 1024 bytes, as written."""
    head = data[:1024]
    match = _XML.match(head) or _META.search(head)
    return match.group(1).decode("ascii").strip().lower() if match else None


def codec_for(label: str) -> str | None:
    """Python's codec for a charset label, as a browser reads it; None when unknown."""
    label = label.strip().lower()
    name = BROWSER_LABELS.get(label, label)
    try:
        info = codecs.lookup(name)
    except LookupError:
        return None
    if not getattr(info, "_is_text_encoding", True):  # base64, rot13, ...: not text
        return None
    if info.name.startswith(("utf-16", "utf-32")):
        # A label readable as ASCII cannot be in UTF-16 or 32: browsers read UTF-8.
        return "utf-8"
    return info.name


def decode(data: bytes, *, declared: bool = False) -> Decoded:
    """``data`` as text; ``declared`` looks for an HTML/XML charset declaration too.

    Raises :class:`NotText` when the bytes are not text.
    """
    for bom, name in BOMS:
        if data.startswith(bom):
            try:
                return _checked(data[len(bom) :].decode(name), name, "bom")
            except UnicodeDecodeError as exc:
                raise NotText(f"{name} byte-order mark, then bytes that are not {name}") from exc
    if declared:
        label = declared_charset(data)
        said = codec_for(label) if label else None
        if said is not None:
            for codec in (said, *filter(None, [_FALLBACK.get(said)])):
                try:
                    return _checked(data.decode(codec), codec, "declared")
                except UnicodeDecodeError:
                    continue
            # Declared wrongly: the bytes themselves are the better evidence.
    seven_bit = _seven_bit(data)
    if seven_bit is not None:
        return seven_bit
    try:
        return _checked(data.decode("utf-8"), "utf-8", "utf-8")
    except UnicodeDecodeError:
        pass
    guesses = list(from_bytes(data))
    if not guesses:
        fallback = _cjk_fallback(data)
        if fallback is None:
            raise NotText("not UTF-8, nor text in any other encoding")
        return fallback
    best = guesses[0]
    for guess in guesses:
        if guess.encoding == _PREFERRED and guess.chaos <= best.chaos + _NEAR:
            best = guess
            break
    return _checked(str(best), best.encoding, "detected")


def _script_share(text: str) -> float:
    """The share of ``text``'s non-ASCII characters that are CJK (Han, Kana, Hangul and
    their punctuation); 0 when it has none."""
    wide = [c for c in text if ord(c) > 0x7F]
    return sum(1 for c in wide if _CJK.match(c)) / len(wide) if wide else 0.0


def _seven_bit(data: bytes) -> Decoded | None:
    """ASCII bytes that hold a 7-bit CJK encoding's escapes, decoded in it; else None."""
    if not data.isascii():
        return None
    for escape, codec in _SEVEN_BIT:
        if not escape.search(data):
            continue
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        if _script_share(text) >= _SCRIPT_SHARE:
            return _checked(text, codec, "escapes")
    return None


def _cjk_fallback(data: bytes) -> Decoded | None:
    """The first of the detector's blind spots that decodes ``data`` into CJK text."""
    for codec in _CJK_FALLBACK:
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        if _script_share(text) >= _SCRIPT_SHARE:
            try:
                return _checked(text, codec, "detected")
            except NotText:
                continue
    return None


def _checked(text: str, encoding: str, found_by: str) -> Decoded:
    if "\x00" in text:
        at = text.index("\x00")
        raise NotText(f"binary data, not text (a NUL character at position {at})")
    if text:
        controls = len(text) - len(_CONTROLS.sub("", text))
        if controls > _MAX_CONTROL_SHARE * len(text):
            share = 100 * controls / len(text)
            raise NotText(f"binary data, not text ({share:.0f}% control characters)")
    return Decoded(text, encoding, found_by)
