"""report.html in Debian's Chromium (Python Playwright): Chinese text is drawn with a CJK face that the page's
font stack names — real glyphs, not the boxes a page that names no CJK font can get — and Simplified and
Traditional both get a face with their glyphs. Looks at what Chromium rendered (fonts used per node, pixels)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from curate import report

pytestmark = [pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
NAMED = re.findall(r'"([^"]+)"', report.CSS.split("body{font:")[1].split(";")[0])
CJK_FACES = [f for f in NAMED if any(k in f for k in ("CJK", "PingFang", "YaHei", "Hiragino", "Han Sans",
                                                          "WenQuanYi", "JhengHei"))]


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():  # CI installs it (scripts/ci_services.sh); never skip silently
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (scripts/ci_services.sh does it)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield browser.new_page(viewport={"width": 1000, "height": 800})
        finally:
            browser.close()


def _fonts(page, selector: str) -> list[dict]:
    cdp = page.context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument")["root"]["nodeId"]
    node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
    return cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]


def _pixels(page, selector: str) -> bytes:
    from PIL import Image

    img = Image.open(io.BytesIO(page.locator(selector).screenshot())).convert("L")
    return img.tobytes()


def test_chinese_in_the_report_is_drawn_with_a_named_cjk_face(page, tmp_path):
    simp, trad = "请把下面这句话翻译成英文", "請把下面這句話翻譯成英文"
    tofu = "\U000f0001" * len(simp)  # private-use code points: no font has them, Chromium draws boxes
    examples = {"language_mismatch": [{"source": "a.jsonl", "source_row": 3, "prompt": simp, "chosen": "OK",
                                       "rejected": "no", "detail": "prompt is zh-Hans, chosen reply is en"}]}
    html = report.page("t", [f"<p id=simp>{simp}</p><p id=trad>{trad}</p><p id=tofu>{tofu}</p>",
                             report.examples_html(examples)])
    path = tmp_path / "report.html"
    path.write_text(html, encoding="utf-8")
    page.goto(path.as_uri())
    assert CJK_FACES, "the font stack names no CJK face"
    for sel, text in (("#simp", simp), ("#trad", trad)):
        fonts = _fonts(page, sel)
        used = {f["familyName"] for f in fonts if f["glyphCount"]}
        assert used & set(CJK_FACES), (sel, fonts, "no CJK face of the stack is installed or used")
        assert sum(f["glyphCount"] for f in fonts) == len(text)  # every character drawn from a real face
    cells = page.locator("table.examples td.text")
    assert simp in cells.all_inner_texts()
    cjk_cell = cells.nth(1)  # the prompt column of the example row
    assert cjk_cell.inner_text() == simp
    # pixels: real glyphs differ from one another and from boxes
    a, b, boxes = _pixels(page, "#simp"), _pixels(page, "#trad"), _pixels(page, "#tofu")
    assert a != b and a != boxes
    assert len(set(a)) > 2  # not a blank line
