"""Training and sampling throughput of the default `mnist` configuration on this machine.

    python bench/bench_training.py                 # train img/s, sampling ms/step at batch 64, 1 vs 2 processes
    python bench/bench_training.py --skip-ddp

Prints (1) training throughput (images/s) of the default mnist config (a short run of real training steps after a
warm-up), (2) the time of one sampling step at batch 64: one denoiser call, without and with classifier-free
guidance (which doubles the batch), and (3) images/s of the same short training run on 1 process vs 2 processes
(torchrun, gloo), measured back to back in one run, with their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def train_throughput(steps: int, warmup: int) -> tuple[float, int]:
    from diffuscope.data import load_dataset
    from diffuscope.models.config import build_denoiser, fit_to_data
    from diffuscope.nets import count_parameters
    from diffuscope.training import preset
    from diffuscope.training.loop import training_batch

    cfg = preset("mnist")
    data = load_dataset("mnist")
    model_cfg = fit_to_data(cfg.model, image_size=data.image_size, channels=data.channels,
                            class_names=data.class_names)
    d = build_denoiser(model_cfg)
    opt = torch.optim.AdamW(d.net.parameters(), lr=cfg.train.lr)
    times = []
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        x0, sigma, noise, cond = training_batch(data, data.images, data.labels, d, cfg.train, step)
        loss = d.loss(x0, sigma, noise, cond).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= warmup:
            times.append(time.perf_counter() - t0)
    return cfg.train.batch_size / statistics.median(times), count_parameters(d.net)


def sampling_step_ms(repeats: int) -> tuple[float, float]:
    from diffuscope.core.guidance import CFGDenoiser
    from diffuscope.models.config import build_denoiser, fit_to_data
    from diffuscope.training import preset

    cfg = preset("mnist")
    d = build_denoiser(fit_to_data(cfg.model, image_size=28, channels=1, class_names=tuple("0123456789"))).eval()
    x, sigma, cond = torch.randn(64, 1, 28, 28), torch.full((64,), 2.0), torch.randint(0, 10, (64,))
    guided = CFGDenoiser(d, 2.0, 10)
    plain_t, cfg_t = [], []
    with torch.inference_mode():
        for _ in range(2):
            d(x, sigma, cond), guided(x, sigma, cond)
        for _ in range(repeats):
            t0 = time.perf_counter()
            d(x, sigma, cond)
            t1 = time.perf_counter()
            guided(x, sigma, cond)
            plain_t.append(t1 - t0)
            cfg_t.append(time.perf_counter() - t1)
    return 1000 * statistics.median(plain_t), 1000 * statistics.median(cfg_t)


def process_throughput(nproc: int, steps: int) -> float:
    """images/s of a real `diffuscope train` run (mnist defaults), from its metrics.csv (steps after the first log)."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        args = ["--data", "mnist", "--out", str(run), "--max-steps", str(steps), "--checkpoint-every", "0",
                "--sample-every", "0", "--quiet"]
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // nproc))}
        if nproc == 1:
            cmd = [sys.executable, "-m", "diffuscope", "train", *args]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                   "--master_port", "29611", "-m", "diffuscope", "train", *args]
        toml = Path(tmp) / "log.toml"
        toml.write_text("[train]\nlog_every = 5\n")
        subprocess.run([*cmd, "--config", str(toml)], check=True, env=env, capture_output=True)
        rows = (run / "metrics.csv").read_text().splitlines()[1:]
        rates = [float(r.split(",")[4]) for r in rows[1:]]
        return statistics.median(rates)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--ddp-steps", type=int, default=30)
    p.add_argument("--skip-ddp", action="store_true")
    a = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    rate, params = train_throughput(a.steps, a.warmup)
    print(f"training, default mnist config ({params / 1e6:.2f}M params, batch 64): {rate:.1f} images/s")
    plain, guided = sampling_step_ms(a.repeats)
    print(f"sampling step at batch 64: {plain:.1f} ms (one denoiser call), {guided:.1f} ms with CFG "
          f"(cond + uncond in one batch of 128)")
    if not a.skip_ddp:
        one = process_throughput(1, a.ddp_steps)
        two = process_throughput(2, a.ddp_steps)
        print(f"data-parallel, global batch 64: 1 process {one:.1f} images/s, 2 processes (gloo, 1 thread each) "
              f"{two:.1f} images/s, ratio {two / one:.2f}")


if __name__ == "__main__":
    main()
