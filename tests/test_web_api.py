"""`diffuscope serve`'s server rules, through starlette's TestClient: every refusal, the job queue, server-sent
events, cancel, saved files. Real shipped model, tiny step counts."""

import dataclasses
import json
import os
import threading
import time

import pytest
import torch

pytest.importorskip("fastapi", reason="the web extra (fastapi) is not installed")
from fastapi.testclient import TestClient

from diffuscope.io.pngmeta import read_png_params
from diffuscope.web import lesson
from diffuscope.web.app import create_app
from diffuscope.web.jobs import Worker
from diffuscope.web.lesson import load_entry

pytestmark = pytest.mark.usefixtures("one_thread")
BASE = "http://127.0.0.1:7860"
TOKEN = "test-token"


@pytest.fixture(scope="module")
def mnist():
    return load_entry("mnist")


def _client(mnist, out, **kw):
    return TestClient(create_app([mnist], out, token=TOKEN, **kw), base_url=BASE)


@pytest.fixture
def client(mnist, tmp_path):
    with _client(mnist, tmp_path / "out") as c:
        yield c


class Gate:
    """The model's denoiser, held at the job's second sampler step (its first call at a lower sigma) until
    ``release()`` returns True: a job cannot run past step 1 before the test has done what it tests, however fast
    the machine. ``release`` is polled on an Event, never slept on; after TIMEOUT_S the step fails loudly."""

    TIMEOUT_S = 120

    def __init__(self, denoiser):
        self.denoiser, self.release = denoiser, lambda: True
        self.first_sigma, self.held = None, threading.Event()

    def __getattr__(self, name):
        return getattr(self.denoiser, name)  # .schedule and the rest of the denoiser

    def __call__(self, x, sigma, cond=None):
        s = float(torch.as_tensor(sigma).flatten()[0])
        self.first_sigma = s if self.first_sigma is None else self.first_sigma
        if s < self.first_sigma and not self.held.is_set():
            self.held.set()
            wake = threading.Event()
            deadline = time.monotonic() + self.TIMEOUT_S
            while not self.release():
                assert time.monotonic() < deadline, "the gate was never released"
                wake.wait(0.01)
        return self.denoiser(x, sigma, cond)


@pytest.fixture
def gated(mnist, tmp_path):
    """A client whose one model is the shipped mnist behind a Gate; yields (client, gate)."""
    gate = Gate(mnist.model.denoiser)
    entry = dataclasses.replace(mnist, model=dataclasses.replace(mnist.model, denoiser=gate))
    with _client(entry, tmp_path / "out") as c:
        yield c, gate


def job_token(client, job):
    return client.app.state.server.worker.get(job).token


def wait_finished(client, job) -> str:
    """The job's final state, waited for on its own condition variable (no sleeps)."""
    j = client.app.state.server.worker.get(job)
    deadline = time.monotonic() + Gate.TIMEOUT_S
    while not j.events_since(len(j.events), 1.0)[1]:
        assert time.monotonic() < deadline, f"job {job} did not finish"
    return j.state


def post(client, url, body, **headers):
    return client.post(url, json=body, headers={"X-Diffuscope-Token": TOKEN, **headers})


def events(client, job):
    """Every event of a job, in order, read from its server-sent event stream."""
    out = []
    with client.stream("GET", f"/api/jobs/{job}/events") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: {}":
                out.append(json.loads(line[6:]))
            if line == "event: end":
                break
    return out


def test_page_carries_the_token_and_every_testid(client):
    page = client.get("/")
    assert page.status_code == 200 and TOKEN in page.text
    for tid in ("forward-t", "forward-image", "prompt", "sampler", "steps", "seed", "guidance", "generate", "cancel",
                "preview-xt", "preview-x0", "step-counter", "exercise-steps", "exercise-run", "exercise-grid",
                "exercise-answer"):
        assert f'data-testid="{tid}"' in page.text, tid
    assert "http" not in client.get("/static/app.js").text.replace("http://", "")  # no CDN, no outside URL
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/../app.py").status_code == 404
    assert "access-control-allow-origin" not in page.headers  # no CORS


@pytest.mark.parametrize("base", ["http://evil.example", "http://evil.example:7860", "http://127.0.0.1.nip.io"])
def test_foreign_host_is_refused(mnist, tmp_path, base):
    with TestClient(create_app([mnist], tmp_path, token=TOKEN), base_url=base) as c:
        r = c.get("/api/models")
    assert r.status_code == 403 and "DNS rebinding" in r.json()["error"]


def test_foreign_origin_and_missing_token_are_refused(client):
    body = {"steps": 2}
    assert client.get("/api/models", headers={"Origin": "http://evil.example"}).status_code == 403
    assert post(client, "/api/generate", body, Origin="http://evil.example").status_code == 403
    assert post(client, "/api/generate", body, Origin="null").status_code == 403
    assert post(client, "/api/generate", body, **{"Sec-Fetch-Site": "cross-site"}).status_code == 403
    r = client.post("/api/generate", json=body)
    assert r.status_code == 403 and "token" in r.json()["error"]
    r = client.post("/api/generate", json=body, headers={"X-Diffuscope-Token": "wrong"})
    assert r.status_code == 403
    assert client.get("/api/models", headers={"Origin": "http://localhost:7860"}).status_code == 200


@pytest.mark.parametrize("url,body,message", [
    ("/api/generate", {"steps": 0}, "steps must be in 1..1000"),
    ("/api/generate", {"steps": 1001}, "steps must be in 1..1000"),
    ("/api/generate", {"sampler": "nope"}, "unknown sampler 'nope'"),
    ("/api/generate", {"prompt": "cat"}, "cat"),
    ("/api/generate", {"seed": -1}, "seed"),
    ("/api/generate", {"steps": "many"}, "steps"),
    ("/api/generate", {"guidance": -1}, "guidance must be >= 0"),
    ("/api/generate", {"guidance": 2, "guidance_interval": [5, 1]}, "interval"),
    ("/api/generate", {"model": "other"}, "unknown model 'other'; valid: mnist"),
    ("/api/generate", {"preview": "cheap"}, "no cheap latent preview"),
    ("/api/exercise", {"n": 0}, "n must be in 1..64"),
    ("/api/exercise", {"n": 65}, "n must be in 1..64"),
    ("/api/exercise", {"steps": "abc"}, "step"),
    ("/api/exercise", {"samplers": []}, "at least one sampler"),
    ("/api/exercise", {"steps": "1-40", "samplers": ["DDIM"]}, "cells"),
    ("/api/exercise", {"steps": "1000", "n": 64, "samplers": ["Heun"]}, "limit"),
    ("/api/phases", {"steps": 1}, "steps must be in 2..1000"),
    ("/api/invert", {"steps": 1}, "steps must be in 2..1000"),
    ("/api/invert", {"index": 10**9}, "outside 0..999 (mnist test set)"),
    ("/api/invert", {"index": -1}, "index"),
    ("/api/invert", {"sampler": "Heun"}, "no one-step form"),
    ("/api/invert", {"regen_prompt": "cat"}, "cat"),
])
def test_bad_parameters_are_400_with_one_line(client, url, body, message):
    r = post(client, url, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert message in error and "\n" not in error


def test_generate_streams_every_step_and_saves_the_png(client, tmp_path):
    r = post(client, "/api/generate", {"prompt": "7", "sampler": "DDIM", "steps": 3, "seed": 5, "guidance": 1.5,
                                       "preview_every": 2})
    assert r.status_code == 200
    job = r.json()["job"]
    evs = events(client, job)
    steps = [e for e in evs if e["type"] == "step"]
    assert [(e["k"], e["n"]) for e in steps] == [(1, 3), (2, 3), (3, 3)]
    assert [("xt" in e, "x0" in e) for e in steps] == [(False, False), (True, True), (True, True)]  # every 2 + last
    assert steps[0]["sigma"] > steps[1]["sigma"] > steps[2]["sigma"]
    done = evs[-1]
    assert done["type"] == "done" and done["image"].startswith("data:image/png;base64,") and done["nfe"] == 3
    png = client.get(f"/api/files/{job}/{done['file']}")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    saved = tmp_path / "out" / job / done["file"]
    text, params = read_png_params(saved)  # the same two chunks as `diffuscope sample`
    assert "Steps: 3" in text and "Sampler: DDIM" in text and "Seed: 5" in text
    assert params["prompt"] == "7" and params["guidance"] == 1.5 and params["model_name"] == "mnist"
    assert (tmp_path / "out" / job / "grid.png").is_file()
    # EventSource reconnects with Last-Event-ID: the stream resumes after it
    with client.stream("GET", f"/api/jobs/{job}/events", headers={"Last-Event-ID": str(len(evs) - 2)}) as s:
        again = [json.loads(x[6:]) for x in s.iter_lines() if x.startswith("data: ") and x != "data: {}"]
    assert again == evs[-1:]


def test_files_never_leave_the_job_folder(client, tmp_path):
    job = post(client, "/api/generate", {"steps": 1, "preview_every": 0}).json()["job"]
    assert events(client, job)[-1]["type"] == "done"
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG secret")
    os.symlink(secret, tmp_path / "out" / job / "link.png")
    other = "0" * 32
    for path in (f"{job}/../../secret.png", f"{job}/..%2F..%2Fsecret.png", f"{job}/link.png", f"{other}/x.png",
                 "..%2F..%2Fsecret.png/x.png", f"{job}/%2Fetc%2Fpasswd", f"{job}/a/b/c.png", f"{job}/.."):
        r = client.get(f"/api/files/{path}")
        assert r.status_code == 404, path
        assert b"secret" not in r.content


def test_full_queue_answers_429_and_cancel_before_start(mnist, tmp_path):
    worker = Worker(queue_size=1, start=False)  # nothing runs: the queue fills
    with _client(mnist, tmp_path, worker=worker) as c:
        first = post(c, "/api/generate", {"steps": 2})
        assert first.status_code == 200
        full = post(c, "/api/generate", {"steps": 2})
        assert full.status_code == 429 and full.headers["Retry-After"] and "queue is full" in full.json()["error"]
        job = first.json()["job"]
        # honest state: queued, with its place in the queue, also for a later page load (GET by id)
        assert (first.json()["state"], first.json()["position"]) == ("queued", 1)
        state = c.get(f"/api/jobs/{job}").json()
        assert (state["state"], state["position"], state["final"]) == ("queued", 1, None)
        assert post(c, f"/api/jobs/{job}/cancel", {}).json()["state"] == "queued"
        worker.start()
        assert events(c, job)[-1] == {"type": "cancelled", "state": "cancelled",
                                      "message": "cancelled before it started"}
        assert c.get(f"/api/jobs/{job}").json()["position"] is None
        assert post(c, "/api/generate", {"steps": 1}).status_code == 200  # room again
        assert post(c, f"/api/jobs/{'f' * 32}/cancel", {}).status_code == 404


def test_cancel_stops_a_running_job_at_the_next_step(gated):
    client, gate = gated
    job = post(client, "/api/generate", {"steps": 1000, "sampler": "Euler", "preview_every": 0}).json()["job"]
    gate.release = lambda: job_token(client, job).cancelled  # step 2 waits for the cancel
    seen = []
    with client.stream("GET", f"/api/jobs/{job}/events") as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: {}":
                continue
            seen.append(json.loads(line[6:]))
            if len(seen) == 1:
                assert post(client, f"/api/jobs/{job}/cancel", {}).status_code == 200
            if seen[-1]["type"] != "step":
                break
    # cancelled during step 2: it stops at that step's end, before reporting it
    assert [e["type"] for e in seen] == ["step", "cancelled"] and seen[0]["k"] == 1, seen
    assert client.get(f"/api/jobs/{job}").json()["state"] == "cancelled"


def test_forward_frames(client):
    r = client.get("/api/forward", params={"index": 3, "seed": 1})
    f = r.json()
    # the shipped mnist model is continuous (EDM, sigma 0.002..20): the slider moves along sigma, log-spaced
    assert r.status_code == 200 and f["continuous"] is True and f["t"] == list(range(101)) and f["T"] == 100
    assert f["sigma"][0] == 0 and f["sigma"][1] == pytest.approx(0.002) and f["sigma"][-1] == pytest.approx(20)
    assert f["snr_db"][0] is None and f["snr_db"][-1] == pytest.approx(-26.02, abs=0.01)
    assert f["sqrt_alpha_bar"][0] == 1.0 and len(f["closed"]) == len(f["chain"]) == 101
    assert f["closed"][0] != f["closed"][50] and f["chain"][0] == f["closed"][0]  # t = 0: the clean image twice
    assert client.get("/api/forward", params={"index": 10**9}).status_code == 400


def test_small_exercise_fills_cells_and_answers(client):
    plan = client.get("/api/exercise/plan", params={"samplers": "DDIM|Euler", "steps": "2,4", "n": 4}).json()
    # DDIM 2 + 4, Euler 2 + 4, the DPM++ 2M reference at 7 steps: 19 NFE per image
    assert plan["nfe"] == 2 + 4 + 2 + 4 + 7 and plan["image_nfe"] == 19 * 4
    assert (plan["cells"], plan["total"], plan["highlight"]) == (4, 5, [])  # the reference counts in the total
    default = client.get("/api/exercise/plan", params={"n": 1}).json()  # where the picture breaks, and the lesson's
    assert default["steps"] == [1, 2, 3, 5, 10, 25, 50, 100] and default["highlight"] == [10, 25, 50, 100]
    r = post(client, "/api/exercise", {"prompt": "3", "samplers": ["DDIM", "Euler"], "steps": "2,4", "n": 4,
                                       "guidance": 1.0})
    assert r.json()["prompt_note"] is None  # a trained class
    evs = events(client, r.json()["job"])
    assert evs[0]["type"] == "plan" and evs[0]["nfe"] == plan["nfe"] and evs[0]["total"] == 5
    cells = [e for e in evs if e["type"] == "cell"]
    assert [(e["sampler"], e["steps"]) for e in cells] == [("DDIM", 2), ("DDIM", 4), ("Euler", 2), ("Euler", 4)]
    assert [(e["done"], e["total"]) for e in cells] == [(2, 5), (3, 5), (4, 5), (5, 5)]  # after the reference
    done = evs[-1]
    assert done["type"] == "done" and done["state"] == "done", done
    assert list(done["answers"]) == list(done["results"]) == ["DDIM", "Euler"]
    for s, row in done["results"].items():
        assert row["headline"].endswith(f"({s}).") and "[" not in row["headline"] and "95%" not in row["headline"]
        assert row["detail"].startswith("Pixel RMSE to the 7-step DPM++ 2M reference") and row["state"] == "done"
        assert done["answers"][s] == f"{row['headline']} {row['detail']}"
    job = r.json()["job"]
    assert client.get(f"/api/files/{job}/{done['plot']}").status_code == 200
    # each cell: several seeds (grid_rows = 4), and its first seed's difference to the reference, amplified x8
    for e in cells:
        assert [x["seed"] for x in e["seed_images"]] == [0, 1, 2, 3] and e["diff_scale"].startswith("x8: white = 31")
        for url in [x["image"] for x in e["seed_images"]] + [e["diff_image"]]:
            assert url.startswith(f"/api/files/{job}/") and client.get(url).status_code == 200, url
    _, params = read_png_params(client.app.state.out_dir / job / cells[0]["file"])
    assert params["steps"] == 2 and params["sampler"] == "DDIM" and params["prompt"] == "3"
    _, params = read_png_params(client.app.state.out_dir / job / cells[0]["seed_images"][2]["image"].split("/")[-1])
    assert params["seed"] == 2



def test_exercise_rows_of_seeds_as_an_xy_plot(client):
    body = {"prompt": "3", "samplers": ["DDIM"], "steps": "2,3", "n": 4, "axis_x": "steps", "axis_y": "seed",
            "axis_y_values": "5,7"}
    plan = client.get("/api/exercise/plan", params={k: v for k, v in body.items() if k != "samplers"}).json()
    assert plan["rows"] == ["5", "7"] and (plan["cells"], plan["total"]) == (4, 6)  # two references
    evs = events(client, post(client, "/api/exercise", body).json()["job"])
    cells = [e for e in evs if e["type"] == "cell"]
    assert [(e["y"], e["steps"], e["seed_images"][0]["seed"]) for e in cells] == [
        ("5", 2, 5), ("5", 3, 5), ("7", 2, 7), ("7", 3, 7)]
    assert [e["done"] for e in evs if "done" in e and e["type"] != "done"] == [1, 2, 3, 4, 5, 6]
    done = evs[-1]
    assert done["type"] == "done" and list(done["results"]) == ["5", "7"]
    assert done["results"]["7"]["headline"].startswith("seed 7: ") and len(done["plots"]) == 2
    for bad in ({"axis_y": "colour", "axis_y_values": "1"}, {"axis_y": "seed", "axis_y_values": "x"},
                {"axis_y": "seed", "axis_y_values": ""}, {"axis_y": "spacing", "axis_y_values": "wobbly"},
                {"axis_y": "seed", "axis_y_values": ",".join(map(str, range(9)))}, {"axis_x": "sampler"}):
        r = post(client, "/api/exercise", {**body, **bad})
        assert r.status_code == 400 and "\n" not in r.json()["error"], bad


def test_diff_image_is_the_amplified_difference():
    a = torch.zeros(1, 2, 2)
    b = a.clone()
    b[0, 0, 0] = 2 / 255  # one grey level
    b[0, 1, 1] = 1.0  # half the range
    pixels = torch.from_numpy(__import__('numpy').asarray(lesson.diff_image(a, b)).copy())
    assert pixels.tolist() == [[8, 0], [0, 255]]  # x8, clipped at white


def test_a_cancelled_exercise_says_how_far_it_got_and_gives_no_answer(gated):
    client, gate = gated
    r = post(client, "/api/exercise", {"prompt": "3", "samplers": ["DDIM"], "steps": "2,4", "n": 4})
    job = r.json()["job"]
    gate.release = lambda: job_token(client, job).cancelled  # the reference's second step waits for the cancel
    assert gate.held.wait(60), client.get(f"/api/jobs/{job}").json()["final"]
    post(client, f"/api/jobs/{job}/cancel", {})
    end = events(client, job)[-1]
    assert end["type"] == "cancelled" and end["state"] == "cancelled"
    assert end["headline"] == "cancelled after 0 of 2 cells" and (end["done"], end["total"]) == (0, 3)
    assert end["results"] == {"DDIM": {"state": "cancelled", "headline": "cancelled after 0 of 2 cells",
                                       "detail": ""}}
    assert "answers" not in end


def test_a_second_client_reattaches_to_a_job_by_its_id(mnist, tmp_path):
    with _client(mnist, tmp_path / "out") as first:
        job = post(first, "/api/generate", {"steps": 3, "preview_every": 0}).json()["job"]
        seen = events(first, job)
        second = TestClient(first.app, base_url=BASE)  # a later page load keeps only the id
        state = second.get(f"/api/jobs/{job}").json()
        assert state["state"] == "done" and state["events"] == len(seen) and state["final"] == seen[-1]
        assert events(second, job) == seen  # the stream replays from the first event
    done = seen[-1]
    # the reverse job kept every frame (x_t and the predicted clean image) on disk, each with its band
    assert [f["k"] for f in done["frames"]] == [1, 2, 3] and [f["band"] for f in done["frames"]] == [
        "early", "middle", "late"]
    assert [e["band"] for e in seen if e["type"] == "step"] == ["early", "middle", "late"]
    for f in done["frames"]:
        assert (tmp_path / "out" / job / "frames" / f["xt"].split("/")[-1]).is_file()
        assert (tmp_path / "out" / job / "frames" / f["x0"].split("/")[-1]).is_file()


def test_a_job_nobody_watches_any_more_is_cancelled(gated, monkeypatch):
    import diffuscope.web.routes.jobs as web_jobs

    client, gate = gated
    monkeypatch.setattr(web_jobs, "DISCONNECT_GRACE_S", 0.2)
    job = post(client, "/api/generate", {"steps": 1000, "sampler": "Euler", "preview_every": 0}).json()["job"]
    gate.release = lambda: job_token(client, job).cancelled  # step 2 waits: only the grace timer can end the job
    with client.stream("GET", f"/api/jobs/{job}/events") as r:
        next(line for line in r.iter_lines() if line.startswith("data: "))  # the client goes away after one step
    assert wait_finished(client, job) == "cancelled"


def test_cli_serve_refuses_bad_flags_in_one_line(capsys):
    import socket

    from diffuscope.cli import main

    assert main(["serve", "--port", "70000"]) == 2
    with socket.socket() as s:  # a free port: the socket is bound before the models load
        s.bind(("127.0.0.1", 0))
        free = str(s.getsockname()[1])
    assert main(["serve", "--model", "mnist", "--model", "mnist", "--port", free]) == 2
    assert main(["serve", "--model", "/no/such/model", "--real", "/no/such/folder"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "1..65535" in err[0] and "share a name" in err[1] and "does not exist" in err[2]


def test_phases_give_a_verdict_per_claim(client, mnist):
    from diffuscope.lesson.phases_report import PhasesConfig, measure_phases
    from diffuscope.lesson.verdicts import explained_verdicts, phase_verdicts

    r = post(client, "/api/phases", {"prompt": "", "steps": 6, "n": 2, "seed": 3})
    done = events(client, r.json()["job"])[-1]
    assert done["type"] == "done", done
    claims = [v["claim"] for v in done["verdicts"]]
    assert claims[:3] == ["composition is decided early", "structure forms in the middle", "detail comes late"]
    # the page's verdicts are the library's on the same measurement (unconditional, 6 steps, 2 images, seed 3)
    config = PhasesConfig(prompt=None, steps=6, n=2, seed=3, points=6, consistency_steps=(1, 3, 6))
    freq, commit, _, _ = measure_phases(mnist.model, config)
    assert done["verdicts"] == [v.to_dict() for v in explained_verdicts(freq, commit)]
    assert [[v["claim"], v["measured"], v["verdict"]] for v in done["verdicts"]] == [
        list(v) for v in phase_verdicts(freq, commit)]
    assert all(v["why"] and v["numbers"] for v in done["verdicts"])
    assert "frequency.png" in done["plots"]
    assert client.get(f"/api/files/{r.json()['job']}/frequency.png").status_code == 200


def test_invert_a_real_digit_and_regenerate_it_or_edit_it(client, tmp_path):
    from safetensors.torch import load_file

    r = post(client, "/api/invert", {"index": 3, "steps": 25})
    job = r.json()["job"]
    done = events(client, job)[-1]
    assert done["type"] == "done", done
    report = done["report"]
    assert report["prompt"] == done["label"] and report["steps"] == 25 and report["nfe"] == 49
    # the lesson's claim, measured: iPNDM at 25 steps each way brings a held-out digit back within a grey level
    assert report["rmse_grey_levels"] < 1 and done["answer"].startswith("reachable: regenerated within")
    for name in done["files"].values():
        assert client.get(f"/api/files/{job}/{name}").status_code == 200
    saved = json.loads(client.get(f"/api/files/{job}/invert.json").text)
    assert saved["rmse"] == report["rmse"] and saved["reachability"] == done["answer"]
    assert saved["image"] == "mnist test image 3"
    noise = load_file(str(tmp_path / "out" / job / "noise.safetensors"))["noise"]  # the client's output folder
    assert noise.shape == (1, 1, 28, 28) and 0.3 < float(noise.std()) < 1.2
    edit = events(client, post(client, "/api/invert", {"index": 3, "steps": 10, "prompt": done["label"],
                                                       "regen_prompt": "8"}).json()["job"])[-1]
    assert edit["type"] == "done" and edit["report"]["regen_prompt"] == "8" and edit["answer"].startswith("edited")


def test_the_worker_survives_a_failing_job():
    worker = Worker(queue_size=2)
    try:
        bad = worker.submit("x", lambda job: 1 / 0)
        good = worker.submit("x", lambda job: {"type": "done", "id": job.id})
        for job in (bad, good):
            while not job.finished:
                job.events_since(len(job.events), 1.0)
        assert bad.state == "error"
        assert bad.events[-1] == {"type": "error", "message": "ZeroDivisionError: division by zero"}
        assert good.state == "done" and good.events[-1] == {"type": "done", "id": good.id}
    finally:
        worker.close()


def test_the_page_takes_its_limits_and_defaults_from_the_server(client):
    from diffuscope.checks import limits
    from diffuscope.core.defaults import DEFAULT_STEPS

    info = client.get("/api/info").json()
    assert info["limits"]["max_steps"] == limits.MAX_SERVE_STEPS == client.get("/api/models").json()[0]["max_steps"]
    assert info["defaults"]["steps"] == DEFAULT_STEPS and info["limits"]["max_exercise_n"] == lesson.MAX_EXERCISE_N
    page, script = client.get("/").text, client.get("/static/app.js").text
    assert 'max="1000"' not in page and 'max="64"' not in page and "1000" not in script  # nothing repeated
    assert "/api/info" in script
    r = post(client, "/api/generate", {"preview_every": 0})  # the body's default steps are DEFAULT_STEPS too
    assert [e for e in events(client, r.json()["job"]) if e["type"] == "step"][-1]["n"] == DEFAULT_STEPS


def test_models_say_their_kind_and_default_prompt(client, tmp_path):
    mnist = client.get("/api/models").json()[0]
    assert (mnist["conditioning"], mnist["latent"], mnist["default_prompt"]) == ("class", False, "7")
    from diffuscope.io.checkpoint import builtin_models

    if "emoji" in builtin_models():
        emoji = load_entry("emoji").describe()
        assert (emoji["conditioning"], emoji["latent"], emoji["default_prompt"]) == ("text", True, "red apple")
        assert emoji["shape"] == [3, 32, 32]
        # suggestions: the 1,646 names it was trained on, not the 10 held-out ones
        assert len(emoji["class_names"]) == 1646 and "red apple" in emoji["class_names"]
        assert "green apple" not in emoji["class_names"]
        frames = lesson.forward_frames(load_entry("emoji"), index=0, seed=0)
        assert frames["continuous"] and frames["sigma"][-1] == pytest.approx(80) and "pixel space" in frames["note"]


def test_prompt_note_names_the_nearest_trained_prompts_and_the_words_cut():
    from diffuscope.core.conditioning import TextConditioner
    from diffuscope.lesson.prompt_note import PromptIndex, prompt_note

    trained = ["tiger", "tired face", "cat face", "dog face", "grinning face", "red heart", "tiger face mask"][:-1]
    index = PromptIndex(trained + [f"thing {i} face" for i in range(1650)])  # as many prompts as the emoji model
    text = TextConditioner(lambda p: None, "toy", max_tokens=4, count_tokens=lambda t: len(t.split()))
    assert prompt_note(text, index, "tiger") is None and prompt_note(text, index, "  Red  Heart ") is None
    note = prompt_note(text, index, "tiger face")
    assert note.startswith("'tiger face' is not one of the 1656 prompts this model was trained on")
    assert note.endswith("nearest trained: 'tiger', 'tired face', 'thing 0 face'")  # the rare shared word first
    assert index.nearest("tigr")[0] == "tiger"  # no shared word: spelling
    long = prompt_note(text, index, "a big red tiger in the grass")
    assert long == ("this prompt is 7 tokens long and the text encoder reads at most 4: 'in the grass' (3 words) "
                    "does not fit; shorten it")
    start = time.perf_counter()
    for _ in range(20):
        prompt_note(text, index, "purple tiger face")
    assert (time.perf_counter() - start) / 20 < 0.05  # cheap enough to ask on every keystroke


def test_prompt_check_and_the_notes_of_generate_and_exercise(client):
    ok = client.get("/api/prompt-check", params={"prompt": "3"}).json()
    assert ok["prompt_note"] is None and ok["model"] == "mnist"
    assert client.get("/api/prompt-check", params={"prompt": "seven"}).json()["prompt_note"] is None  # an alias
    bad = client.get("/api/prompt-check", params={"prompt": "tiger"}).json()["prompt_note"]
    assert bad.startswith("unknown") or "tiger" in bad
    assert client.get("/api/prompt-check", params={"prompt": ""}).json()["prompt_note"] is None
    assert client.get("/api/prompt-check", params={"prompt": "a\x1bb"}).status_code == 400  # the validation layer
    r = post(client, "/api/generate", {"prompt": "3", "steps": 1, "preview_every": 0})
    assert r.status_code == 200 and r.json()["prompt_note"] is None
    assert client.get("/api/exercise/plan", params={"prompt": "3", "steps": "2", "n": 4}).json()["prompt_note"] is None
