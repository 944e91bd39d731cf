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


def _shot(page, section: str, name: str | None = None) -> None:
    folder = os.environ.get("DIFFUSCOPE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.locator(f"#{section}").screenshot(path=str(Path(folder) / f"web-{name or section}.png"))


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
    # the reverse direction is said to be learned, and the kept frames can be gone back through with the keyboard
    assert "this direction is learned" in page.locator("#reverse").inner_text()
    scrubber = tid("reverse-scrubber")
    scrubber.focus()
    page.keyboard.press("End")
    sync_api.expect(scrubber).to_have_attribute("aria-valuetext", re.compile(r"^step 10 of 10, sigma [0-9.]+, late: "))
    assert "late: detail" in page.locator("#band-caption").inner_text()
    page.keyboard.press("Home")
    sync_api.expect(scrubber).to_have_attribute("aria-valuetext", re.compile(r"^step 1 of 10, sigma [0-9.]+, early: "))
    first = tid("preview-x0").get_attribute("src")
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    sync_api.expect(scrubber).to_have_attribute("aria-valuetext", re.compile(r"^step 6 of 10, sigma [0-9.]+, middle: "))
    assert tid("preview-x0").get_attribute("src") != first
    assert "middle: structure" in page.locator("#band-caption").inner_text()
    sync_api.expect(page.locator("#reverse").get_by_test_id("job-state")).to_have_text("done")
    _shot(page, "reverse")
    # a refused prompt (Enter in the prompt generates): a note on the prompt, and the previous picture is cleared
    tid("prompt").fill("cat")
    sync_api.expect(tid("prompt-note")).to_contain_text("cat", timeout=10_000)
    tid("prompt").press("Enter")
    sync_api.expect(tid("generate-status")).to_contain_text("unknown prompt", timeout=10_000)
    sync_api.expect(tid("final-image")).to_be_hidden()
    sync_api.expect(tid("final-save")).to_be_hidden()
    assert "10 / 10" not in tid("step-counter").inner_text()
    _no_broken_images(page)


def test_cancel_stops_a_long_generation(page):
    tid = page.get_by_test_id
    tid("steps").fill("1000")
    tid("generate").click()
    sync_api.expect(page.locator("#reverse").get_by_test_id("job-state")).to_have_text("running", timeout=30_000)
    sync_api.expect(tid("step-counter")).to_have_text(re.compile(r"^step [1-9]\d* / 1000$"), timeout=30_000)
    tid("cancel").click()
    sync_api.expect(tid("generate-status")).to_have_text("cancelled", timeout=30_000)
    k = int(tid("step-counter").inner_text().split()[1])
    assert k < 1000


def test_small_exercise_reads_its_sentence(page):
    tid = page.get_by_test_id
    # the page's default is the wider range with the lesson's four step counts inside it
    assert tid("exercise-steps").input_value() == "1,2,3,5,10,25,50,100"
    assert tid("exercise-axis-x").input_value() == "steps"
    assert [o.get_attribute("value") for o in tid("exercise-axis-y").locator("option").all()] == [
        "sampler", "seed", "guidance", "spacing"]
    tid("exercise-axis-y").select_option("seed")
    sync_api.expect(tid("exercise-y-values")).to_be_visible()
    tid("exercise-axis-y").select_option("sampler")
    sync_api.expect(tid("exercise-y-values")).to_be_hidden()
    tid("exercise-steps").fill("2,10")
    tid("exercise-n").fill("4")
    for box in page.locator("#exercise-samplers input").all():
        box.set_checked(box.get_attribute("value") == "DDIM")
    # announced before it starts: DDIM 2 + 10 and the DPM++ 2M reference at 16 steps
    sync_api.expect(tid("exercise-plan")).to_contain_text("28 network evaluations", timeout=10_000)
    tid("exercise-run").click()
    sync_api.expect(tid("answer-headline")).to_contain_text("DDIM", timeout=120_000)
    sync_api.expect(page.locator("#exercise").get_by_test_id("job-state")).to_have_text("done")
    cells = tid("exercise-cell")
    assert cells.count() == 2
    assert page.locator("#exercise-grid th.lesson").all_inner_texts() == ["\u2605 10 steps"]
    for i in range(2):  # each cell shows its seeds, loaded, at least 48 px each (was one 84 px image or 28 px)
        img = cells.nth(i).locator("img").first
        assert img.evaluate("i => i.naturalWidth") > 0 and img.bounding_box()["width"] >= 48
    headline = tid("answer-headline").inner_text()
    assert "steps" in headline and headline.strip().endswith(".")
    saved = page.evaluate("JSON.parse(localStorage.getItem('diffuscope-progress')).exercise.answers")
    assert saved == [headline.strip()]
    # a cell opens large in a dialog, pixelated
    cells.nth(1).click()
    dialog = page.locator("#cell-dialog")
    sync_api.expect(dialog).to_be_visible()
    sync_api.expect(dialog.locator("img").first).to_be_visible()
    big = dialog.locator("img").first
    assert big.evaluate("i => getComputedStyle(i).imageRendering") == "pixelated"
    assert big.bounding_box()["width"] >= 150
    assert "DDIM, 10 steps" in dialog.inner_text()
    page.keyboard.press("Escape")
    sync_api.expect(dialog).to_be_hidden()
    # the difference to the reference, with its scale written
    tid("exercise-diff-toggle").check()
    sync_api.expect(page.locator("#exercise-diff-scale")).to_contain_text("difference to the reference")
    sync_api.expect(cells.nth(0).locator("img")).to_have_attribute("alt", re.compile("^difference of DDIM, 2 steps"))
    _no_broken_images(page)
    tid("exercise-diff-toggle").uncheck()
    _shot(page, "exercise")


def test_exercise_rows_of_seeds_like_an_xy_plot(page):
    tid = page.get_by_test_id
    tid("exercise-axis-y").select_option("seed")
    tid("exercise-y-values").fill("0,1")
    tid("exercise-steps").fill("2,3")
    tid("exercise-n").fill("4")
    sync_api.expect(tid("exercise-plan")).to_contain_text("network evaluations", timeout=10_000)
    tid("exercise-run").click()
    sync_api.expect(tid("answer-headline")).to_have_count(2, timeout=120_000)
    assert page.locator("#exercise-grid th[scope=row]").all_inner_texts() == ["seed 0", "seed 1"]
    assert tid("exercise-cell").count() == 4 and page.locator("#exercise-grid td.done").count() == 4
    headlines = tid("answer-headline").all_inner_texts()
    assert headlines[0].startswith("seed 0: ") and headlines[1].startswith("seed 1: ")
    # different seeds: different pictures in the same column
    first = [page.locator(f"#exercise-grid td[data-row='{r}'][data-steps='3'] img").first.get_attribute("src")
             for r in ("0", "1")]
    assert first[0] != first[1]


def test_a_cancelled_exercise_says_so_and_gives_no_answer(page):
    tid = page.get_by_test_id
    for box in page.locator("#exercise-samplers input").all():
        box.set_checked(box.get_attribute("value") == "DDIM")
    tid("exercise-steps").fill("2,400")
    tid("exercise-n").fill("4")
    sync_api.expect(tid("exercise-plan")).to_contain_text("network evaluations", timeout=10_000)
    tid("exercise-run").click()
    state = page.locator("#exercise").get_by_test_id("job-state")
    sync_api.expect(state).to_have_text(re.compile("running"), timeout=30_000)
    # a reload mid-exercise reattaches: the same grid, the job still running
    page.reload()
    sync_api.expect(state).to_have_text("running", timeout=30_000)
    sync_api.expect(page.locator("#exercise-grid th[scope=col]")).to_have_text(["2 steps", "400 steps"])
    tid("exercise-cancel").click()
    sync_api.expect(state).to_have_text("cancelled", timeout=60_000)
    sync_api.expect(tid("exercise-plan")).to_contain_text(re.compile(r"cancelled after \d of 2 cells"))
    sync_api.expect(tid("answer-headline")).to_contain_text("cancelled after")
    assert "not an answer" in tid("answer-headline").inner_text()
    assert "cells done" not in tid("exercise-plan").inner_text()


def test_phases_and_inversion_answer_the_lessons_claims(page):
    tid = page.get_by_test_id
    page.locator("#phases-steps").fill("6")
    page.locator("#phases-n").fill("2")
    tid("phases-run").click()
    sync_api.expect(tid("phases-verdicts")).to_contain_text("composition is decided early", timeout=120_000)
    rows = page.locator("#phases-verdicts tr").count() - 1
    assert rows >= 3 and tid("verdict-why").count() == rows
    for why in tid("verdict-why").all_inner_texts():
        assert why.startswith("why: ") and len(why) > 20
    alts = [img.get_attribute("alt") for img in page.locator("#phases-plots img").all()]
    assert alts and all(a.startswith("plot: ") and ".png" not in a for a in alts)
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


def test_a_phases_job_survives_a_reload(page):
    tid = page.get_by_test_id
    state = page.locator("#phases").get_by_test_id("job-state").first
    page.locator("#phases-steps").fill("40")
    page.locator("#phases-n").fill("8")
    tid("phases-run").click()
    sync_api.expect(state).to_have_text("running", timeout=30_000)
    job = page.evaluate("JSON.parse(sessionStorage.getItem('diffuscope-jobs')).phases.job")
    # a reload mid-measurement reattaches to the same job: running, then its verdicts with their whys
    page.reload()
    sync_api.expect(state).to_have_text("running", timeout=30_000)
    assert tid("phases-run").is_disabled()
    assert page.evaluate("JSON.parse(sessionStorage.getItem('diffuscope-jobs')).phases.job") == job
    sync_api.expect(tid("phases-verdicts")).to_contain_text("composition is decided early", timeout=180_000)
    sync_api.expect(state).to_have_text("done")
    assert tid("verdict-why").count() == page.locator("#phases-verdicts tr").count() - 1 >= 3
    assert tid("phases-run").is_enabled()
    assert all(f"/api/files/{job}/" in img.get_attribute("src") for img in page.locator("#phases-plots img").all())


def _no_broken_images(page) -> None:
    """No visible <img> without a src or not (yet) loaded: a broken-image icon never shows."""
    broken = page.evaluate("""() => [...document.images].filter((i) => i.getClientRects().length &&
        (!i.getAttribute('src') || !i.complete || i.naturalWidth === 0)).map((i) => i.id || i.alt)""")
    assert broken == []


def test_phone_width_accessibility_and_no_broken_images(browser, server):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(server)
    tid = page.get_by_test_id
    sync_api.expect(tid("forward-image")).to_have_attribute("src", re.compile("^data:"), timeout=60_000)
    sync_api.expect(tid("forward-image")).to_be_visible()
    # before any run: the previews and results are not shown at all (no broken-image icons)
    for name in ("preview-xt", "preview-x0", "final-image", "invert-original", "exercise-plot"):
        sync_api.expect(tid(name)).to_be_hidden()
    _no_broken_images(page)
    assert page.locator("main").count() == 1
    for name in ("step-counter", "exercise-answer", "prompt-note"):
        assert tid(name).get_attribute("aria-live") == "polite"
    assert page.locator("#reverse").get_by_test_id("job-state").get_attribute("aria-live") == "polite"
    assert page.locator("img[alt='x_t'], img[alt$='.png']").count() == 0
    # the lesson's full grid (8 step counts x 2 samplers) scrolls inside its own box, not the page
    tid("exercise-run").click()
    sync_api.expect(page.locator("#exercise-grid th.lesson")).to_have_count(4, timeout=30_000)
    tid("exercise-cancel").click()
    sync_api.expect(page.locator("#exercise").get_by_test_id("job-state")).to_have_text("cancelled", timeout=120_000)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, width
    inner = page.locator(".grid-box").evaluate("b => b.scrollWidth - b.clientWidth")
    assert inner > 0  # the 100-step column is reached by scrolling the grid, not cut off
    _no_broken_images(page)
    _shot(page, "exercise", "phone-exercise")
    context.close()
    assert not errors, errors


def test_a_job_survives_a_reload_and_a_second_tab_waits_in_the_queue(browser, server):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    first, second = context.new_page(), context.new_page()
    errors = []
    for p in (first, second):
        p.on("pageerror", lambda e: errors.append(str(e)))
        p.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
        p.goto(server)
        sync_api.expect(p.get_by_test_id("forward-image")).to_have_attribute("src", re.compile("^data:"),
                                                                           timeout=60_000)
    a, b = first.get_by_test_id, second.get_by_test_id
    a_state, b_state = (p.locator("#reverse").get_by_test_id("job-state") for p in (first, second))
    a("steps").fill("1000")
    a("preview-every").fill("50")
    a("generate").click()
    sync_api.expect(a_state).to_have_text("running", timeout=30_000)
    sync_api.expect(a("step-counter")).not_to_have_text("step 0 / 1000", timeout=30_000)
    # the second tab's job waits behind the first: it says queued, not running
    b("steps").fill("5")
    b("generate").click()
    sync_api.expect(b_state).to_contain_text("queued", timeout=10_000)
    second.wait_for_timeout(1500)  # still waiting: the first tab's job holds the worker
    assert "queued" in b_state.inner_text() and "running" not in b_state.inner_text()
    # a reload mid-generation reattaches to the same job (its events replay from the first)
    first.reload()
    sync_api.expect(a_state).to_have_text("running", timeout=30_000)
    sync_api.expect(a("step-counter")).to_have_text(re.compile(r"^step \d+ / 1000$"), timeout=30_000)
    k = int(a("step-counter").inner_text().split()[1])
    sync_api.expect(a("step-counter")).not_to_have_text(f"step {k} / 1000", timeout=30_000)
    assert a("reverse-scrubber").is_enabled()
    a("cancel").click()
    sync_api.expect(a_state).to_have_text("cancelled", timeout=30_000)
    # then the second tab's job runs
    sync_api.expect(b_state).to_have_text("done", timeout=60_000)
    sync_api.expect(b("step-counter")).to_have_text("step 5 / 5")
    context.close()
    assert not errors, errors
