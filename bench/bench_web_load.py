"""`diffuscope serve` under load: N concurrent clients on 127.0.0.1 for a bounded time.

    python bench/bench_web_load.py                      # 20 clients, 60 s, 5-step generations, queue size 4
    python bench/bench_web_load.py --clients 20 --seconds 120 --steps 10

Each client loops: POST a generation (on 429 it waits Retry-After, as the page would), read the job's server-sent
events to its final event, repeat. Checks and prints: no job lost (every accepted job ends with done), no 5xx,
the queue limit held (429s counted; never more than queue size + 1 jobs unfinished at once, sampled), and the
server's resident memory at the start, after the warm-up and at the end (flat = no leak per job).
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--queue-size", type=int, default=4)
    args = ap.parse_args()

    import httpx
    import torch
    import uvicorn

    from diffuscope.web.app import create_app
    from diffuscope.web.lesson import load_entry

    torch.set_num_threads(1)
    mem = [("start", rss_mb())]
    app = create_app([load_entry("mnist")], tempfile.mkdtemp(prefix="bench-load-"), token="load",
                     queue_size=args.queue_size)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    base, headers = f"http://127.0.0.1:{port}", {"X-Diffuscope-Token": "load"}
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + args.seconds
    max_unfinished = 0

    def client(i: int) -> None:
        with httpx.Client(timeout=300) as c:
            while time.monotonic() < stop:
                r = c.post(f"{base}/api/generate", headers=headers,
                           json={"steps": args.steps, "seed": i, "prompt": str(i % 10), "preview_every": 1})
                with lock:
                    counts[f"POST {r.status_code}"] += 1
                if r.status_code == 429:
                    time.sleep(float(r.headers.get("Retry-After", "1")) * 0.2)  # shortened: more pressure
                    continue
                if r.status_code != 200:
                    continue
                final = None
                with c.stream("GET", f"{base}/api/jobs/{r.json()['job']}/events") as s:
                    with lock:
                        counts[f"GET events {s.status_code}"] += 1
                    for line in s.iter_lines():
                        if line.startswith("data: ") and line != "data: {}":
                            ev = json.loads(line[6:])
                            if ev["type"] in ("done", "error", "cancelled"):
                                final = ev["type"]
                                break
                with lock:
                    counts[f"job {final or 'lost'}"] += 1

    # warm-up, then the load
    with httpx.Client() as c:
        c.post(f"{base}/api/generate", headers=headers, json={"steps": 1})
    time.sleep(2)
    mem.append(("after warm-up", rss_mb()))
    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        unfinished = sum(not j.finished for j in list(app.state.worker.jobs.values()))
        max_unfinished = max(max_unfinished, unfinished)
        time.sleep(0.1)
    mem.append(("end", rss_mb()))
    server.should_exit = True

    print(f"{args.clients} clients, {args.seconds:g} s, {args.steps}-step generations with a preview every step, "
          f"queue size {args.queue_size}")
    for k in sorted(counts):
        print(f"  {k:<16} {counts[k]}")
    five = sum(v for k, v in counts.items() if " 5" in k)
    lost = counts["job lost"] + counts["job error"]
    print(f"  5xx: {five}; jobs lost or failed: {lost}; most unfinished jobs at once: {max_unfinished} "
          f"(limit {args.queue_size} queued + 1 running)")
    print("  memory (RSS, MB): " + ", ".join(f"{k} {v:.0f}" for k, v in mem))
    ok = five == 0 and lost == 0 and max_unfinished <= args.queue_size + 1
    print("PASS" if ok else "FAIL")


if __name__ == "__main__":
    main()
