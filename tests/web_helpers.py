"""What the web tests (test_web_api.py, test_web_sections.py) share: a TestClient with the page token, a Gate that
holds a job at its second step, and readers of a job's events and final state. Their fixtures (mnist, client,
gated) are in conftest.py."""

import json
import threading
import time

import torch
from fastapi.testclient import TestClient

from diffuscope.web.app import create_app

BASE = "http://127.0.0.1:7860"
TOKEN = "test-token"


def make_client(mnist, out, **kw):
    return TestClient(create_app([mnist], out, token=TOKEN, **kw), base_url=BASE)


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
