"""The composing page (``GET /`` of ``melodia serve``) in a real headless browser.

Debian's ``chromium`` and ``chromium-driver`` through selenium (``.ci/run`` installs them);
where there is no browser the test is skipped and says why. The server runs the shipped
default model, as a user's would, so the page shows real music: pick a mood, press Generate,
wait for a playable audio element and a drawn piano roll, then read back the MIDI download.
With ``MELODIA_SCREENSHOTS=1`` the screenshots go to ``docs/screenshots/`` (the README shows
them); otherwise to the test's temporary folder.
"""
from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("symusic")

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")


def _browser():
    try:
        from selenium import webdriver
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium; .ci/run installs it)")
    if not CHROMIUM or not DRIVER:
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver; .ci/run does)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--autoplay-policy=no-user-gesture-required"):
        opts.add_argument(arg)
    try:
        return webdriver.Chrome(service=Service(DRIVER), options=opts)
    except Exception as e:  # a browser that cannot start here (no sandbox support, missing libraries)
        pytest.skip(f"chromium could not start: {str(e).splitlines()[0][:200]}")


@pytest.fixture(scope="module")
def page_server():
    from conftest import running_server

    from melodia import Composer

    with running_server(Composer.load()) as srv:  # the shipped model, as a user has it
        yield srv


@pytest.fixture(scope="module")
def browser():
    b = _browser()
    yield b
    b.quit()


def _shots(tmp_path: Path) -> Path:
    if os.environ.get("MELODIA_SCREENSHOTS") == "1":
        out = ROOT / "docs" / "screenshots"
        out.mkdir(parents=True, exist_ok=True)
        return out
    return tmp_path


def _wait(browser, condition, timeout=180, what="the page"):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(browser, timeout, poll_frequency=0.2).until(condition)
    except TimeoutException:
        err = browser.execute_script("return document.getElementById('error').textContent")
        raise AssertionError(f"timed out waiting for {what}; the page's error box says: {err!r}") from None


def _download(browser, link) -> bytes:
    """The bytes behind a download link (a blob: URL), read inside the page."""
    b64 = browser.execute_async_script("""
        const [href, done] = arguments;
        fetch(href).then(r => r.arrayBuffer()).then(buf => {
          let s = ""; const a = new Uint8Array(buf);
          for (let i = 0; i < a.length; i++) s += String.fromCharCode(a[i]);
          done(btoa(s));
        }).catch(e => done("ERROR " + e));""", link.get_attribute("href"))
    assert not b64.startswith("ERROR"), b64
    return base64.b64decode(b64)


def test_compose_in_the_browser(page_server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    from melodia import Piece

    shots = _shots(tmp_path)
    browser.set_script_timeout(60)
    browser.get(page_server.url + "/")
    _wait(browser, lambda b: b.execute_script("return document.body.dataset.ready === '1'"), 60, "the page to load")
    assert browser.title == "melodia"
    assert "F# minor" in [o.text for o in browser.find_elements(By.CSS_SELECTOR, "#key option")]
    assert not browser.find_element(By.ID, "error").is_displayed()
    browser.save_screenshot(str(shots / "page-empty.png"))

    # a sad piece of 8 bars, seed 3
    browser.find_element(By.CSS_SELECTOR, "label[for=mood-sad]").click()
    bars = browser.find_element(By.ID, "bars")
    bars.clear()
    bars.send_keys("8")
    browser.find_element(By.ID, "seed").send_keys("3")
    browser.find_element(By.ID, "generate").click()
    assert browser.find_element(By.ID, "progress").is_displayed()  # the work shows while it runs
    audio = _wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, ".piece audio"), what="the audio player")[0]
    # playable: the browser has read the WAV's header and knows its length
    _wait(browser, lambda b: b.execute_script("return arguments[0].readyState >= 1 && arguments[0].duration > 0",
                                              audio), 60, "the audio to load")
    seconds = browser.execute_script("return arguments[0].duration", audio)
    canvas = browser.find_element(By.CSS_SELECTOR, ".piece canvas.roll")
    n_drawn = int(canvas.get_attribute("data-notes"))
    inked = browser.execute_script("""
        const c = arguments[0], d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] < 200 && d[i + 2] > d[i] + 40) n++;
        return n;""", canvas)
    assert n_drawn > 20 and inked > 500, (n_drawn, inked)  # notes drawn in the melody's blue
    card = browser.find_element(By.CSS_SELECTOR, ".piece")
    assert card.find_element(By.TAG_NAME, "h2").text.startswith("sad ·")
    assert "8 bars" in card.find_element(By.TAG_NAME, "h2").text
    chords = [s.text for s in card.find_elements(By.CSS_SELECTOR, ".chords span")]
    assert chords, "the piece's chords are shown"
    browser.execute_script("arguments[0].scrollIntoView()", card)
    browser.save_screenshot(str(shots / "page-result.png"))

    # the MIDI download is a 4/4 MIDI file of exactly the requested bars
    midi = _download(browser, card.find_element(By.CSS_SELECTOR, "a.mid"))
    piece = Piece.from_midi(midi)
    assert piece.meter == "4/4" and piece.bars == 8 and len(piece.notes) == n_drawn
    assert abs(seconds - piece.duration_s) < 3.0
    assert [c.name for c in piece.chords if c.name != "N.C."] == chords
    wav = _download(browser, card.find_element(By.CSS_SELECTOR, "a.wav"))
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"
    assert card.find_element(By.CSS_SELECTOR, "a.mid").get_attribute("download").endswith(".mid")

    # regenerate bars 5-8 of it: a second result whose bars 1-4 are the first one's
    start, end = card.find_element(By.CSS_SELECTOR, "input.from"), card.find_element(By.CSS_SELECTOR, "input.to")
    start.clear()
    start.send_keys("5")
    end.clear()
    end.send_keys("8")
    card.find_element(By.CSS_SELECTOR, "button.infill").click()
    _wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, ".piece")) == 2, what="the rewritten piece")
    newest = browser.find_elements(By.CSS_SELECTOR, ".piece")[0]
    assert "bars 5–8 rewritten" in newest.find_element(By.CSS_SELECTOR, ".meta").text
    filled = Piece.from_midi(_download(browser, newest.find_element(By.CSS_SELECTOR, "a.mid")))
    first = [(n.pitch, n.start_beat, n.duration_beats) for n in piece.notes if n.start_beat < 16]
    assert [(n.pitch, n.start_beat, n.duration_beats) for n in filled.notes if n.start_beat < 16] == first
    assert filled.bars == 8

    # continue it by 2 bars: the first 8 bars kept, 10 in all
    more = newest.find_element(By.CSS_SELECTOR, "input.more")
    more.clear()
    more.send_keys("2")
    newest.find_element(By.CSS_SELECTOR, "button.continue").click()
    _wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, ".piece")) == 3, what="the continuation")
    longer = Piece.from_midi(_download(browser, browser.find_elements(By.CSS_SELECTOR, ".piece")[0]
                                       .find_element(By.CSS_SELECTOR, "a.mid")))
    assert longer.bars == 10
    assert [(n.pitch, n.start_beat) for n in longer.notes if n.start_beat < 32] == \
        [(n.pitch, n.start_beat) for n in filled.notes]

    # the first piece again with another seed: same request, new music
    browser.find_elements(By.CSS_SELECTOR, ".piece")[-1].find_element(By.CSS_SELECTOR, "button.again").click()
    _wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, ".piece")) == 4, what="another seed")
    again = browser.find_elements(By.CSS_SELECTOR, ".piece")[0]
    import re

    assert again.find_element(By.TAG_NAME, "h2").text.startswith("sad ·")
    assert re.search(r"seed (\d+)$", again.find_element(By.CSS_SELECTOR, ".meta").text).group(1) != "3"

    # a bad request shows a readable message, not JSON
    browser.find_element(By.ID, "chords").send_keys("Am Xq7")
    browser.find_element(By.ID, "generate").click()
    err = _wait(browser, lambda b: b.find_element(By.ID, "error").text, 60, "the error message")
    assert "Xq7" in err and "{" not in err
    assert len(browser.find_elements(By.CSS_SELECTOR, ".piece")) == 4


def test_mood_buttons_speak_a_musicians_words():
    """Issue 22: the fifth mood button read "plane"; a musician would not guess valence/arousal.
    Every mood button's visible label is a word a musician reads, and the sliders say what they move."""
    import re

    html = (ROOT / "melodia" / "web" / "index.html").read_text()
    labels = re.findall(r'<label class="[^"]*" for="mood-[^"]*"[^>]*>([^<]*)</label>', html)
    assert labels == ["happy", "tense", "sad", "calm", "custom…"]
    assert "plane" not in html
    assert "Brightness" in html and "Energy" in html
