"""`diffuscope serve`'s server rules, through starlette's TestClient: every refusal, the job queue, server-sent
events, cancel, saved files, the limits and models the page is told about. Real shipped model, tiny step counts.
The sections' jobs themselves: tests/test_web_sections.py."""

import json
import os

import pytest

pytest.importorskip("fastapi", reason="the web extra (fastapi) is not installed")
from fastapi.testclient import TestClient

from diffuscope.web import exercise, processes
from diffuscope.web.app import create_app
from diffuscope.web.jobs import Worker
from diffuscope.web.lesson import load_entry
from web_helpers import BASE, TOKEN, events, job_token, make_client, post, wait_finished

pytestmark = pytest.mark.usefixtures("one_thread")


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
    with make_client(mnist, tmp_path, worker=worker) as c:
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


def test_a_second_client_reattaches_to_a_job_by_its_id(mnist, tmp_path):
    with make_client(mnist, tmp_path / "out") as first:
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
    assert info["defaults"]["steps"] == DEFAULT_STEPS and info["limits"]["max_exercise_n"] == exercise.MAX_EXERCISE_N
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
        frames = processes.forward_frames(load_entry("emoji"), index=0, seed=0)
        assert frames["continuous"] and frames["sigma"][-1] == pytest.approx(80) and "pixel space" in frames["note"]
