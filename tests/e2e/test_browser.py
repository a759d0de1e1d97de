"""The real Argilla web UI in Debian's Chromium (Python Playwright; never `playwright install`).

- An annotator signs in, opens a pushed dataset, sees the prompt (with the conversation before it) and both blind
  responses, answers, submits, and `pull` finds that answer, unblinded.
- Blind means blind: nothing is pre-selected (and Submit is disabled) unless the dataset was pushed with
  `--suggest`.
- "Find similar" shows the reference record's fields as text.
- Chinese glyphs are drawn: a screenshot of a Chinese record differs from the same page in a Chromium that has no
  CJK font (which draws boxes), while an English-only element is the same in both.
- No lost work across restarts: an answer selected before `stop` + `serve` is submitted after it and stored.
"""

from __future__ import annotations

import io
import json
import re
import socket
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest

from curate.review import server
from curate.review import settings as S
from curate.review.pull import pull
from curate.review.push import PushOptions, connect, push

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
ZH_PROMPT = "请解释量子力学的基本原理，并举一个例子。"
ZH_CHOSEN = "量子力学研究微观粒子的运动规律，例如电子的双缝干涉实验。"


@pytest.fixture(scope="module")
def playwright():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():  # CI installs it (scripts/ci_services.sh); never skip silently
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (scripts/ci_services.sh does it)")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright):
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
    try:
        yield b
    finally:
        b.close()


def _page(browser, info, account):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30_000)
    page.goto(f"{info.api_url}/sign-in", wait_until="domcontentloaded")
    page.fill("input[name=Username]", account.username)
    page.fill("input[name=Password]", account.password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda u: "sign-in" not in u)
    return page


def _open(page, info, dataset: str, wait_text: str) -> None:
    page.goto(f"{info.api_url}/", wait_until="domcontentloaded")
    page.get_by_text(dataset, exact=True).first.click()  # the dataset list → the annotation page
    page.get_by_text(wait_text).first.wait_for()


def _run(tmp_path: Path, pairs: pl.DataFrame, name: str) -> Path:
    run = tmp_path / name
    run.mkdir()
    pairs.write_parquet(run / "pairs.parquet")
    return run


@pytest.fixture(scope="module")
def pushed(argilla_server, tmp_path_factory):
    """One Chinese and one English pair, pushed twice: blind with vectors (the default), and with --suggest."""
    from tests.conftest import make_pairs

    pairs = make_pairs([
        {"system": "你是一个乐于助人的助手。", "prompt": ZH_PROMPT, "chosen": ZH_CHOSEN, "rejected": "不知道。",
         "chosen_score": 9.0, "rejected_score": 1.0, "lang": "zh"},
        {"prompt": "What is the capital of France?", "chosen": "The capital of France is Paris.",
         "rejected": "France is a country in Europe.", "chosen_score": 8.0, "rejected_score": 2.0, "lang": "en"},
    ])
    tmp = tmp_path_factory.mktemp("browser-runs")
    conn = connect(home=argilla_server.home)
    names = {"blind": f"blind-{uuid.uuid4().hex[:8]}", "suggest": f"suggest-{uuid.uuid4().hex[:8]}"}
    push(_run(tmp, pairs, "blind"), conn, PushOptions(dataset=names["blind"], vectors=True))
    push(_run(tmp, pairs, "suggest"), conn, PushOptions(dataset=names["suggest"], vectors=False, suggest=True))
    return names


def test_annotator_reviews_in_the_browser(argilla_server, browser, tmp_path, pairs_factory):
    pairs = pairs_factory([
        {"system": "You answer in one sentence.", "prompt": "What is the capital of France? 请用一句话回答。",
         "chosen": "The capital of France is Paris.", "rejected": "France is a country in Europe."},
    ])
    run = _run(tmp_path, pairs, "run")
    name = f"browser-{uuid.uuid4().hex[:8]}"
    conn = connect(home=argilla_server.home)
    push(run, conn, PushOptions(dataset=name, vectors=False))
    a_chosen = pl.read_parquet(run / "review" / "mapping.parquet")["a_is_chosen"].item()
    # the annotator will pick whichever position holds the *rejected* reply: pull must swap the pair
    pick = "Response B" if a_chosen else "Response A"

    ann = argilla_server.annotators[0]
    page = _page(browser, argilla_server, ann)
    try:
        _open(page, argilla_server, name, "France is a country in Europe.")
        body = page.inner_text("body")
        for text in ("What is the capital of France? 请用一句话回答。", "System: You answer in one sentence.",
                     "Conversation before the prompt", "The capital of France is Paris.", "Response A",
                     "Response B", "Which response is better?"):
            assert text in body, f"{text!r} not shown"
        a_pos, b_pos = body.index("Response A"), body.index("Response B")
        paris = body.index("The capital of France is Paris.")
        assert (a_pos < paris < b_pos) is a_chosen  # the chosen reply sits where the blind mapping put it

        page.get_by_text(pick, exact=True).last.click()  # the label button in the question form
        page.get_by_role("button", name=re.compile("Submit")).click()
        # the footer counts submissions
        page.wait_for_function("() => /Submitted\\s*1\\b/.test(document.body.innerText)", timeout=30_000)
    finally:
        page.close()

    result = pull(run, conn, name)
    responses = pl.read_parquet(run / "review" / "responses.parquet")
    assert responses.select("user", "status", "vote").rows() == [(ann.username, "submitted", "rejected")]
    assert json.loads(responses["values"][0])[S.Q_BETTER]["value"] == ("b" if a_chosen else "a")
    kept = pl.read_parquet(run / "review" / "pairs.parquet")
    assert kept["chosen"].item() == "France is a country in Europe." and kept["review_swapped"].item()
    assert result.stats["reviewed"] == 1


def _submit_enabled(page) -> bool:
    return page.get_by_role("button", name=re.compile("Submit")).is_enabled()


def test_nothing_is_preselected_unless_pushed_with_suggest(argilla_server, browser, pushed):
    page = _page(browser, argilla_server, argilla_server.annotators[1])
    try:
        _open(page, argilla_server, pushed["blind"], ZH_CHOSEN)
        page.get_by_text("Which response is better?").wait_for()
        assert page.locator("input:checked").count() == 0  # no label, problem or rating chosen for them
        assert not _submit_enabled(page)  # Enter can't accept anything
        # the same records pushed with --suggest: the source's label is pre-selected (why it is off by default)
        _open(page, argilla_server, pushed["suggest"], ZH_CHOSEN)
        page.locator("input:checked").first.wait_for(state="attached")
        assert page.locator("input:checked").count() == 1 and _submit_enabled(page)
    finally:
        page.close()


def test_find_similar_shows_the_reference_record_as_text(argilla_server, browser, pushed):
    page = _page(browser, argilla_server, argilla_server.annotators[1])
    try:
        _open(page, argilla_server, pushed["blind"], ZH_CHOSEN)
        page.get_by_text("Find similar").first.click()
        preview = page.locator(".similarity-reference__preview__text")
        preview.first.wait_for()
        texts = [preview.nth(i).inner_text() for i in range(preview.count())]
        assert f"Prompt: {ZH_PROMPT}" in texts, texts
        assert not any("[object Object]" in t for t in texts)
        # and the search itself ran: the other record is listed with a similarity score
        page.get_by_text("What is the capital of France?").first.wait_for()
    finally:
        page.close()


def _png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.int16)


def _differing(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return 1.0
    return float((np.abs(a - b) > 40).mean())


def test_chinese_glyphs_are_drawn(argilla_server, playwright, browser, pushed, tmp_path):
    """Compared with a Chromium whose fontconfig rejects every CJK font (it draws the same text as boxes): the
    Chinese prompt looks different, an English-only element the same. Without fonts-noto-cjk both would be boxes."""
    conf = tmp_path / "fonts.conf"
    conf.write_text(
        '<?xml version="1.0"?><!DOCTYPE fontconfig SYSTEM "fonts.dtd"><fontconfig>'
        '<include ignore_missing="yes">/etc/fonts/fonts.conf</include>'
        f"<cachedir>{tmp_path / 'fc-cache'}</cachedir>"
        "<selectfont><rejectfont><glob>*CJK*</glob><glob>*cjk*</glob><glob>*wqy*</glob><glob>*Droid*</glob>"
        "<glob>*arphic*</glob></rejectfont></selectfont></fontconfig>"
    )
    tofu = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True,
                                      env={"FONTCONFIG_FILE": str(conf), "HOME": str(tmp_path)})
    shots = {}
    try:
        for label, b in (("fonts", browser), ("tofu", tofu)):
            page = _page(b, argilla_server, argilla_server.annotators[1])
            try:
                _open(page, argilla_server, pushed["blind"], ZH_CHOSEN)
                page.wait_for_timeout(500)  # web fonts that can't load offline give up
                shots[label] = (
                    _png(page.get_by_text(ZH_PROMPT, exact=True).first.screenshot()),
                    _png(page.get_by_text("Conversation before the prompt", exact=True).first.screenshot()),
                )
            finally:
                page.close()
    finally:
        tofu.close()
    chinese = _differing(shots["fonts"][0], shots["tofu"][0])
    english = _differing(shots["fonts"][1], shots["tofu"][1])
    assert english < 0.01, f"the reference browser differs on English text too ({english:.1%}): not a fair comparison"
    assert chinese > 0.05, f"the Chinese prompt renders like boxes ({chinese:.1%} of pixels differ from boxes)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_answer_selected_before_a_restart_is_stored_after_it(browser, tmp_path, pairs_factory):
    """stop + serve used to make a new token-signing key: Submit then failed with "Could not validate credentials"
    and the UI moved on with nothing stored. The key is kept in <home>/secrets.json now."""
    home, port = tmp_path / "home", _free_port()
    info = server.start(home, port=port, annotators=["ann1"])
    try:
        run = _run(tmp_path, pairs_factory([{"prompt": "Restart me?", "chosen": "Yes.", "rejected": "No."}]), "run")
        name = f"restart-{uuid.uuid4().hex[:8]}"
        push(run, connect(home=home), PushOptions(dataset=name, vectors=False))
        page = _page(browser, info, info.annotators[0])
        try:
            _open(page, info, name, "Restart me?")
            page.get_by_text("Response A", exact=True).last.click()
            assert _submit_enabled(page)
            key_before = json.loads((home / "secrets.json").read_text())["secret_key"]
            server.stop(home)
            info = server.start(home, port=port, annotators=["ann1"])
            assert json.loads((home / "secrets.json").read_text())["secret_key"] == key_before
            page.get_by_role("button", name=re.compile("Submit")).click()
            headers = {"X-Argilla-Api-Key": info.owner.api_key}
            deadline, stored = time.monotonic() + 30, []
            while not stored and time.monotonic() < deadline:
                ds = httpx.get(f"{info.api_url}/api/v1/me/datasets", headers=headers, timeout=30).json()["items"]
                ds_id = next(d["id"] for d in ds if d["name"] == name)
                items = httpx.get(f"{info.api_url}/api/v1/datasets/{ds_id}/records", headers=headers,
                                  params={"include": "responses"}, timeout=30).json()["items"]
                stored = [r for item in items for r in item.get("responses") or []]
                time.sleep(0.3)
            assert [(r["status"], r["values"][S.Q_BETTER]["value"]) for r in stored] == [("submitted", "a")]
            assert "Could not validate credentials" not in page.inner_text("body")
        finally:
            page.close()
    finally:
        server.stop(home)
