"""`diffuscope serve`'s sections, through starlette's TestClient: the forward frames, a generation's step events
and PNG, the exercise (cells, X/Y rows, difference images, a cancelled one), phases, inversion and the prompt notes.
Real shipped model, tiny step counts. The server's rules: tests/test_web_api.py."""

import json
import time

import pytest
import torch

pytest.importorskip("fastapi", reason="the web extra (fastapi) is not installed")
from diffuscope.io.pngmeta import read_png_params
from diffuscope.web import exercise
from web_helpers import events, job_token, post

pytestmark = pytest.mark.usefixtures("one_thread")


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
    pixels = torch.from_numpy(__import__('numpy').asarray(exercise.diff_image(a, b)).copy())
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
