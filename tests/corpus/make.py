"""Write the parser-fidelity corpus (tests/test_parsers.py): ``python tests/corpus/make.py``.

Each file is a real-world shape a parser must read as a person would: Markdown that
wraps its sentences, HTML and text in legacy encodings (7-bit ISO-2022-JP mail among
them), a BOM, bytes that are not text
at all, and a scanned PDF with no text layer. The files are committed; this script is
how they were made, so a changed one can be made again the same way.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

HERE = Path(__file__).resolve().parent

SOFT_BREAKS_MD = """\
# Tenure for document pipelines

Tenure is free software: anyone may use it for any purpose without any license fees or
royalties, and the queue keeps every
task ranging from a one-page memo to a thousand-page manual.

Hard breaks end a line on purpose:\\
the lighthouse keeper logbook\x20\x20
records every passing ship.

- a list item that wraps onto
  a second line about the copper kettle
- the next item is about *emphasis
  that spans* two lines and a [link that
  wraps](https://example.org/docs)

> A quoted passage also wraps
> from one line to the next.

## Installing

    pip install tenure
    tenure worker app:reg

```python
def quarterly_report():
    return "granite"
```

| planet  | moons           |
|---------|-----------------|
| Jupiter | ninety-five     |
| Saturn  | one hundred     |

<div align="center">
juniper<br>tramway<br/>
</div>

Closing words: emerald
harbour at dusk.
"""

CRLF_MD = (
    "Notes from the Zürich office\r\n"
    "============================\r\n"
    "\r\n"
    "The caf\u00e9 on the corner serves cr\u00e8me br\u00fbl\u00e9e\r\n"
    "every Friday, and the team\u2019s favourite is the\r\n"
    "hazelnut one.\r\n"
    "\r\n"
    "* Bring the signed contracts to\r\n"
    "  the front desk before noon.\r\n"
)

LATIN1_HTML = """\
<!DOCTYPE html PUBLIC "-//W3C//DTD HTML 4.01//EN">
<html><head>
<meta http-equiv="Content-Type" content="text/html; charset=ISO-8859-1">
<title>Discographie de St\u00e9phane Grappelli</title>
<style>p { margin: 0 }</style>
</head><body>
<h1>St\u00e9phane Grappelli</h1><p><span class="lettrine">V</span>ioloniste \
fran\u00e7ais de jazz, n\u00e9 \u00e0 Paris.</p><p>Il a jou\u00e9
au Quintette du Hot Club de France avec Django Reinhardt.</p>
<ul><li>Premier disque</li><li>Deuxi\u00e8me disque</li></ul>
<p>Adresse&nbsp;: caf\u00e9 de la gare<br>rue de la R\u00e9publique<br/>Lyon</p>
<table><tr><td>ann\u00e9e</td><td>1934</td></tr><tr><td>lieu</td><td>Paris</td></tr></table>
<div>fin</div><div>du document</div>
</body></html>
"""

XML_DECLARED_HTML = """\
<?xml version="1.0" encoding="windows-1252"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN"
  "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>Jahresbericht</title></head>
<body><h2>M\u00fcller\u2019s Jahresbericht</h2><p>Die Stra\u00dfe nach M\u00fcnchen
wird \u201eim Fr\u00fchjahr\u201c gesperrt \u2013 so die Gemeinde.</p></body></html>
"""

SHIFT_JIS_TXT = """\
議事録　第十二回　運営委員会

日時：令和五年四月十日（月）午後二時から四時まで
場所：大阪本社、第三会議室

一、前回の議事録を確認し、全員一致で承認した。
二、「在庫管理」の新しい仕組みについて、物流部の担当者から報告があった。\
倉庫ごとの在庫を毎日集計し、月末の棚卸しにかかる時間を半分にする計画である。
三、取引先との契約更新について、法務部が条件を説明した。\
支払いの期限は三十日から四十五日に延ばす案が出されたが、結論は次回に持ち越した。
四、社員研修の予定を決めた。新入社員の研修は五月に東京で行い、管理職の研修は秋に名古屋で行う。
五、その他、会議室の予約方法を改めることになった。

次回は五月八日に開く。以上。
"""

EUC_JP_TXT = """\
図書館からのお知らせ

四月から開館時間が変わります。平日は午前九時から午後八時まで、\
土曜日と日曜日は午前十時から午後五時までです。
「電子書籍」の貸し出しを始めました。利用者カードをお持ちの方は、\
ホームページから申し込むことができます。一度に借りられるのは五冊まで、期間は二週間です。
館内の改修工事のため、六月の第二週は二階の閲覧室を使うことができません。\
ご不便をおかけしますが、ご理解とご協力をお願いいたします。
"""

BIG5_TXT = """\
會議紀錄　第七次董事會

時間：民國一一二年三月十五日下午兩點
地點：臺北總公司，第二會議室

一、上次會議紀錄經全體董事確認，無異議通過。
二、財務長報告本季營業收入，比去年同期成長百分之十二，主要來自海外市場的訂單。
三、關於「倉儲系統」的更新計畫，資訊部說明新系統將在六月上線，屆時各倉庫的庫存資料可以即時查詢。
四、人事處提出員工旅遊的預算，董事們同意在秋天舉辦，地點在花蓮。
五、臨時動議：請各部門在下次會議前提出明年的工作計畫。

散會。下次會議訂於四月十二日舉行。
"""

ISO_2022_JP_TXT = """\
件名：来週の打ち合わせについて

山田様

いつもお世話になっております。
来週の打ち合わせは、火曜日の午後三時から福岡支店の応接室で行います。
資料は「出荷計画表」と見積書の二点です。
よろしくお願いいたします。
"""

UHC_CHAT_TXT = """\
㉮㉮ 똠방!! ⓐⓑ ¿¿¿ 쀍 ⓔ ㉯. .
家乙 뷁뷁 ! ! ! ㅠ.ㅠ 뛟 九月 ㉠ ⓡ
펲 ㈜ ¿¿ 똠 ㉯ . . .
"""

LATIN1_TXT = """\
Compte rendu de la réunion

Stéphane a présenté le budget de l'année. Les élèves de l'école
de musique répètent déjà au café de la gare, prêts pour le concert.
Prochaine réunion : le mardi à quatorze heures, salle Molière.
"""

UTF8_BOM_TXT = """\
Quarterly minutes

The board approved the saffron budget and asked for a revised
forecast of the ferry timetable before the next meeting.
"""

UTF16_BOM_TXT = """\
Inventory of the north warehouse

Forty pallets of walnut flooring arrived on Tuesday.
"""


def scanned_pdf() -> bytes:
    """One page holding only a picture of text, as a scanner makes it: no text layer."""
    from fpdf import FPDF
    from PIL import Image, ImageDraw

    picture = Image.new("L", (360, 120), 255)
    draw = ImageDraw.Draw(picture)
    draw.text((20, 20), "INVOICE 2023-117", fill=0)
    draw.text((20, 50), "Total due: 1,250.00", fill=0)
    draw.line((20, 90, 340, 90), fill=0, width=2)
    pdf = FPDF(unit="pt", format=(360, 120))
    pdf.set_creator("scanner")
    pdf.add_page()
    pdf.image(picture, x=0, y=0, w=360, h=120)
    out = io.BytesIO()
    pdf.output(out)
    return out.getvalue()


def files() -> dict[str, bytes]:
    """Every corpus file's name and bytes."""
    return {
        "soft-breaks.md": SOFT_BREAKS_MD.encode("utf-8"),
        "windows-crlf.md": CRLF_MD.encode("cp1252"),
        "latin1-declared.html": LATIN1_HTML.encode("latin-1"),
        "xml-declared.htm": XML_DECLARED_HTML.encode("cp1252"),
        "shift-jis.txt": SHIFT_JIS_TXT.encode("shift_jis"),
        "euc-jp.txt": EUC_JP_TXT.encode("euc_jp"),
        "big5.txt": BIG5_TXT.encode("big5"),
        "latin1.txt": LATIN1_TXT.encode("latin-1"),
        "iso-2022-jp.txt": ISO_2022_JP_TXT.encode("iso2022_jp"),
        # Hangul of Windows' code page 949 beyond EUC-KR, as terse as chat logs are:
        # too little for the detector, read by the fallback to the CJK code pages.
        "uhc-chat.txt": UHC_CHAT_TXT.encode("cp949"),
        "utf8-bom.txt": UTF8_BOM_TXT.encode("utf-8-sig"),
        "utf16-bom.txt": b"\xff\xfe" + UTF16_BOM_TXT.encode("utf-16-le"),
        "binary.txt": gzip.compress(SOFT_BREAKS_MD.encode() * 4, mtime=0),
        "scanned.pdf": scanned_pdf(),
    }


if __name__ == "__main__":
    for name, data in files().items():
        (HERE / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes")
