"""`diffuscope serve`: time to first preview and what previews cost, side by side, through the real server.

    python bench/bench_web.py                       # 100 DDIM steps, 3 rounds, the shipped mnist model
    python bench/bench_web.py --steps 50 --rounds 5 --threads 2

Starts the app under uvicorn on a free 127.0.0.1 port (one worker thread owns torch, as in `diffuscope serve`) and
reads each job's server-sent events with httpx, as a browser's EventSource would. Per round, in rotating order:

- library:  `generate(...)` called directly, no server, no callback (the floor)
- none:     the page with previews off (step counter only: one small event per step)
- every 5:  x_t and the predicted clean image as PNG data URLs every 5th step (and the last)
- every 1:  previews at every step

Prints, per variant, the median steps per wall second and per CPU second of this process (server, worker and
client together: the CPU figure is what previews cost, and holds up on a busy shared host where wall time does
not), each as a ratio to `none`, and the time from POST to the first step event and to the first preview (the
first event carrying images). Record the numbers in docs/web.md.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import threading
import time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_job(client, base: str, token: str, body: dict) -> dict:
    """POST a generation, read its event stream; seconds to first step event, first preview and the end."""
    t0, c0 = time.perf_counter(), time.process_time()
    job = client.post(f"{base}/api/generate", json=body, headers={"X-Diffuscope-Token": token}).json()["job"]
    first_step = first_preview = None
    steps = 0
    with client.stream("GET", f"{base}/api/jobs/{job}/events") as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: {}":
                continue
            ev = json.loads(line[6:])
            now = time.perf_counter() - t0
            if ev["type"] == "step":
                steps += 1
                first_step = first_step if first_step is not None else now
                if "x0" in ev and first_preview is None:
                    first_preview = now
            elif ev["type"] in ("done", "error", "cancelled"):
                assert ev["type"] == "done", ev
                return {"total": now, "cpu": time.process_time() - c0, "first_step": first_step,
                        "first_preview": first_preview, "steps": steps}
    raise RuntimeError("stream ended without a final event")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mnist")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--sampler", default="DDIM")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = ap.parse_args()

    import httpx
    import torch
    import uvicorn

    from diffuscope.generation.generate import GenerationRequest, generate
    from diffuscope.web.app import create_app
    from diffuscope.web.lesson import load_entry

    torch.set_num_threads(args.threads)
    entry = load_entry(args.model)
    token, port = "bench", _free_port()
    app = create_app([entry], tempfile.mkdtemp(prefix="bench-web-"), token=token)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    body = {"prompt": "7", "sampler": args.sampler, "steps": args.steps, "seed": 0, "guidance": 1.25}

    def library() -> dict:
        t0, c0 = time.perf_counter(), time.process_time()
        generate(entry.model, GenerationRequest(prompts=("7",), sampler=args.sampler, steps=args.steps,
                                                guidance=1.25))
        return {"total": time.perf_counter() - t0, "cpu": time.process_time() - c0, "first_step": None,
                "first_preview": None}

    variants = {"library": None, "none": 0, "every 5": 5, "every 1": 1}
    results: dict[str, list[dict]] = {k: [] for k in variants}
    with httpx.Client(timeout=600) as client:
        run_job(client, base, token, {**body, "steps": 2})  # warm-up (first call allocations)
        names = list(variants)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:  # rotate the order
                every = variants[name]
                res = library() if every is None else run_job(client, base, token, {**body, "preview_every": every})
                results[name].append(res)
    server.should_exit = True

    print(f"model {args.model}, {args.sampler}, {args.steps} steps, guidance 1.25, {args.rounds} rounds, "
          f"torch threads {args.threads}; medians")
    base_rate = args.steps / statistics.median(x["total"] for x in results["none"])
    base_cpu = args.steps / statistics.median(x["cpu"] for x in results["none"])
    print(f"{'variant':<10} {'steps/s':>8} {'vs none':>8} {'steps/CPU-s':>12} {'vs none':>8} {'first step s':>13} "
          f"{'first preview s':>16}")
    for name, rows in results.items():
        rate = args.steps / statistics.median(x["total"] for x in rows)
        cpu = args.steps / statistics.median(x["cpu"] for x in rows)
        fs = [x["first_step"] for x in rows if x["first_step"] is not None]
        fp = [x["first_preview"] for x in rows if x["first_preview"] is not None]
        print(f"{name:<10} {rate:>8.1f} {rate / base_rate:>8.3f} {cpu:>12.1f} {cpu / base_cpu:>8.3f} "
              f"{(f'{statistics.median(fs):.3f}' if fs else '-'):>13} "
              f"{(f'{statistics.median(fp):.3f}' if fp else '-'):>16}")

if __name__ == "__main__":
    main()
