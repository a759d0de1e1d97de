"""The real Argilla web UI in Debian's Chromium (Python Playwright; never `playwright install`): an annotator
signs in, opens a pushed dataset, sees the prompt (with its system prompt) and both blind responses, answers,
submits, and sees the submission counted — then `pull` finds that answer, unblinded."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import polars as pl
import pytest

from curate.review import settings as S
from curate.review.pull import pull
from curate.review.push import PushOptions, connect, push

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():  # CI installs it (scripts/ci_services.sh); never skip silently
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (scripts/ci_services.sh does it)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def test_annotator_reviews_in_the_browser(argilla_server, browser, tmp_path, pairs_factory):
    pairs = pairs_factory([
        {"system": "You answer in one sentence.", "prompt": "What is the capital of France? 请用一句话回答。",
         "chosen": "The capital of France is Paris.", "rejected": "France is a country in Europe."},
    ])
    run = tmp_path / "run"
    run.mkdir()
    pairs.write_parquet(run / "pairs.parquet")
    name = f"browser-{uuid.uuid4().hex[:8]}"
    conn = connect(home=argilla_server.home)
    push(run, conn, PushOptions(dataset=name, vectors=False))
    a_chosen = pl.read_parquet(run / "review" / "mapping.parquet")["a_is_chosen"].item()
    # the annotator will pick whichever position holds the *rejected* reply: pull must swap the pair
    pick = "Response B" if a_chosen else "Response A"

    ann = argilla_server.annotators[0]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30_000)
    try:
        page.goto(f"{argilla_server.api_url}/sign-in", wait_until="domcontentloaded")
        page.fill("input[name=Username]", ann.username)
        page.fill("input[name=Password]", ann.password)
        page.click("button[type=submit]")
        page.wait_for_url(lambda u: "sign-in" not in u)

        page.get_by_text(name, exact=True).first.click()  # the dataset list → the annotation page
        page.get_by_text("France is a country in Europe.").first.wait_for()
        body = page.inner_text("body")
        for text in ("What is the capital of France? 请用一句话回答。", "You answer in one sentence.", "system",
                     "The capital of France is Paris.", "Response A", "Response B", "Which response is better?"):
            assert text in body, f"{text!r} not shown"
        a_pos, b_pos = body.index("Response A"), body.index("Response B")
        paris = body.index("The capital of France is Paris.")
        assert (a_pos < paris < b_pos) is a_chosen  # the chosen reply sits where the blind mapping put it

        page.get_by_text(pick, exact=True).last.click()  # the label button in the question form
        page.get_by_role("button", name=re.compile("Submit")).click()
        # the footer counts submissions
        page.wait_for_function(
            "() => /Submitted\\s*1\\b/.test(document.body.innerText)", timeout=30_000
        )
    finally:
        page.close()

    result = pull(run, conn, name)
    responses = pl.read_parquet(run / "review" / "responses.parquet")
    assert responses.select("user", "status", "vote").rows() == [(ann.username, "submitted", "rejected")]
    assert json.loads(responses["values"][0])[S.Q_BETTER]["value"] == ("b" if a_chosen else "a")
    kept = pl.read_parquet(run / "review" / "pairs.parquet")
    assert kept["chosen"].item() == "France is a country in Europe." and kept["review_swapped"].item()
    assert result.stats["reviewed"] == 1
