"""`diffuscope serve` in a real browser: Playwright driving Debian's chromium (`apt-get install chromium`;
Playwright's own browser download cannot work offline). Without chromium these tests skip, except under CI=true,
where a missing browser fails the run (`.ci/run` installs it).

Set DIFFUSCOPE_SCREENSHOTS=DIR to keep a screenshot of each section there (the README's come from docs/img).
"""

import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the web extra (fastapi) is not installed")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (test extra)")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is missing: CI must install it (apt-get install -y --no-install-recommends chromium)",
                    pytrace=False)
    pytest.skip("chromium is not installed (apt-get install -y --no-install-recommends chromium)",
                allow_module_level=True)
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, one_thread):
    import uvicorn

    from diffuscope.web.app import create_app
    from diffuscope.web.lesson import load_entry

    out = tmp_path_factory.mktemp("serve")
    port = _free_port()
    app = create_app([load_entry("mnist")], out)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # the server's Content-Security-Policy (self only) must not block anything the page does
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(server)
    # (a locator wait: wait_for_function evaluates a string, which the page's CSP forbids, as it should)
    sync_api.expect(page.get_by_test_id("forward-image")).to_have_attribute("src", re.compile("^data:"),
                                                                          timeout=60_000)
    yield page
    context.close()
    assert not errors, errors


def _shot(page, section: str) -> None:
    folder = os.environ.get("DIFFUSCOPE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.locator(f"#{section}").screenshot(path=str(Path(folder) / f"web-{section}.png"))


def test_dragging_forward_t_changes_the_image_and_numbers(page):
    tid = page.get_by_test_id
    before, numbers = tid("forward-image").get_attribute("src"), tid("forward-numbers").inner_text()
    # the shipped mnist model is continuous (EDM): the slider moves along sigma, log-spaced over 0.002..20
    assert "sigma = 0 (stop 0 of 100, edm range 0.002..20)" in numbers and "SNR = inf dB" in numbers
    assert "sigma (log scale)" in page.locator("#forward-t-name").inner_text()
    assert "x<sub>0</sub> + sigma eps" in tid("forward-formula").inner_html()
    box = tid("forward-t").bounding_box()
    page.mouse.move(box["x"] + 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] / 2, steps=5)  # sigma ~ 1: noisy digit
    page.mouse.up()
    assert tid("forward-image").get_attribute("src") != before
    moved = tid("forward-numbers").inner_text()
    assert "sigma = 0 (" not in moved and "SNR = -" in moved  # past sigma = 1 the noise outweighs the digit
    reached = page.evaluate("JSON.parse(localStorage.getItem('diffuscope-progress')).forward")
    assert reached["t"] > 50 and reached["sigma"] > 0.1
    _shot(page, "forward")


def test_generate_shows_every_step_live(page):
    tid = page.get_by_test_id
    page.evaluate("""() => { window.previews = 0;
        new MutationObserver(() => window.previews++).observe(document.getElementById('preview-x0'),
                                                               {attributes: true, attributeFilter: ['src']}); }""")
    tid("prompt").fill("3")
    tid("sampler").select_option("DDIM")
    tid("steps").fill("10")
    tid("seed").fill("4")
    tid("generate").click()
    sync_api.expect(tid("step-counter")).to_have_text("step 10 / 10", timeout=60_000)
    sync_api.expect(tid("final-save")).to_be_visible(timeout=30_000)
    assert page.evaluate("window.previews") >= 10
    assert tid("preview-x0").get_attribute("src").startswith("data:image/png")
    assert tid("final-save").get_attribute("href").endswith("-4.png")
    _shot(page, "reverse")


def test_cancel_stops_a_long_generation(page):
    tid = page.get_by_test_id
    tid("steps").fill("1000")
    tid("generate").click()
    sync_api.expect(tid("step-counter")).not_to_have_text("step 0 / 1000", timeout=30_000)
    tid("cancel").click()
    sync_api.expect(tid("generate-status")).to_have_text("cancelled", timeout=30_000)
    k = int(tid("step-counter").inner_text().split()[1])
    assert k < 1000


def test_small_exercise_reads_its_sentence(page):
    tid = page.get_by_test_id
    tid("exercise-steps").fill("2,4")
    tid("exercise-n").fill("4")
    for box in page.locator("#exercise-samplers input").all():
        box.set_checked(box.get_attribute("value") == "DDIM")
    # announced before it starts: DDIM 2 + 4 and the DPM++ 2M reference at 7 steps
    sync_api.expect(tid("exercise-plan")).to_contain_text("13 network evaluations", timeout=10_000)
    tid("exercise-run").click()
    sync_api.expect(tid("exercise-answer")).to_contain_text("DDIM: ", timeout=120_000)
    assert tid("exercise-grid").locator("img").count() == 2
    answer = tid("exercise-answer").inner_text()
    assert "steps" in answer and answer.strip().endswith(".")
    saved = page.evaluate("JSON.parse(localStorage.getItem('diffuscope-progress')).exercise.answers")
    assert saved == [answer.strip()]
    _shot(page, "exercise")


def test_phases_and_inversion_answer_the_lessons_claims(page):
    tid = page.get_by_test_id
    page.locator("#phases-steps").fill("6")
    page.locator("#phases-n").fill("2")
    tid("phases-run").click()
    sync_api.expect(tid("phases-verdicts")).to_contain_text("composition is decided early", timeout=120_000)
    # any image is reachable from noise: a held-out digit inverted and regenerated, 25 steps each way
    tid("invert-index").fill("3")
    tid("invert-steps").fill("25")
    tid("sampler").select_option("iPNDM")
    tid("invert-run").click()
    sync_api.expect(tid("invert-answer")).to_contain_text("reachable: regenerated within", timeout=120_000)
    for name in ("invert-original", "invert-noise", "invert-regenerated"):
        assert "/invert" not in tid(name).get_attribute("src") and "/api/files/" in tid(name).get_attribute("src")
        assert page.evaluate(f"document.querySelector('[data-testid={name}]').naturalWidth") > 0
    assert "invert.json" in tid("invert-status").inner_text()
    saved = page.evaluate("JSON.parse(localStorage.getItem('diffuscope-progress')).invert.answer")
    assert saved == tid("invert-answer").inner_text().strip()
    # an edit: the same digit regenerated as an 8
    tid("invert-regen-prompt").fill("8")
    tid("invert-steps").fill("10")
    tid("invert-run").click()
    sync_api.expect(tid("invert-answer")).to_contain_text("edited: inverted as", timeout=120_000)
    tid("invert-regen-prompt").fill("")
    tid("invert-steps").fill("25")
    tid("invert-run").click()
    sync_api.expect(tid("invert-answer")).to_contain_text("reachable", timeout=120_000)
    _shot(page, "phases")
