"""Quality against CPU-minutes: diffuscope's training recipe vs the diffusers recipe a user would pick instead.

    python bench/bench_recipes.py --out DIR          # ~28 min on session 5's 2-core host (700 steps + 3x for diffusers)
    python bench/bench_recipes.py --out DIR --ours-steps 300 --factor 2 --eval-n 100   # a quicker look
    python bench/bench_recipes.py --out DIR --diffusers-from bench/results/recipes.json  # ours only (same host!)

Both recipes train on the same data (diffuscope's `mnist` training split, 4,000 images) with the same batch size
and the same torch threads, one after the other on the same machine:

- **diffuscope**: the real command, `diffuscope train --data mnist --max-steps S` (the default recipe: EDM
  preconditioning, log-normal sigmas, AdamW 2e-3, warm-up + cosine, EMA, 1.0M-parameter U-Net), checkpointed
  every S/5 steps. Its clock is the run's own `elapsed_s` in metrics.csv (checkpoint saves included).
- **diffusers**: the `train_unconditional.py` recipe of diffusers' examples: a `UNet2DModel` of a similar parameter
  count (block_out_channels (32, 64, 64), one layer per block, attention at the lowest resolution, 1.1M
  parameters), `DDPMScheduler` (1000 steps, linear betas), the epsilon objective with uniform timesteps and an MSE
  loss, AdamW(lr 1e-4, betas (0.95, 0.999), weight decay 1e-6, eps 1e-8), cosine LR with 500 warm-up steps and
  its EMAModel (max decay 0.9999, inv_gamma 1, power 3/4). Made class-conditional the way diffusers does it
  (`num_class_embeds`), with the same 10% label dropout as diffuscope so both can use classifier-free guidance.
  It trains for FACTOR x diffuscope's wall time; its EMA weights are snapshotted at six even points (the
  snapshot time is not counted).

Every snapshot is judged identically, after training: EVAL_N images (balanced over the ten digits, seed 0) from
diffuscope's DPM++ 2M sampler, 20 steps, guidance 2 (the `sample` defaults; the diffusers model runs through
`diffuscope.adapters.diffusers` on its own schedule), scored by the shipped metrics classifier: accuracy against
the prompt and FD against EVAL_N held-out real images, with the real-vs-real floor at the same N.

Writes DIR/recipes.json, DIR/recipes.png (accuracy and FD against minutes) and prints a table with the minutes
each recipe needs to reach 95% accuracy and their ratio.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

TARGET_ACCURACY = 0.95


def judge_setup(eval_n: int):
    """(classifier, reference features, labels): the shipped metrics classifier, EVAL_N held-out images (as
    real_floor's reference) and balanced prompts; every snapshot is judged against the same three."""
    from diffuscope.data import load_dataset
    from diffuscope.metrics import embed, find_classifier, load_classifier, split_real
    from diffuscope.models.load import load_model

    clf = load_classifier(find_classifier(load_model("mnist").path))
    test = load_dataset("mnist", split="test")
    reference = embed(clf, split_real(test, eval_n, seed=0).reference.images)
    return clf, reference, torch.arange(10).repeat(math.ceil(eval_n / 10))[:eval_n]


def evaluate_snapshots(snapshots: list[dict], eval_n: int) -> None:
    """Add accuracy and FD to each snapshot {"minutes", "denoiser"} (in place; the denoiser is dropped after)."""
    from diffuscope.core.conditioning import ClassConditioner
    from diffuscope.core.model import DiffusionModel
    from diffuscope.generation.generate import GenerationRequest, generate
    from diffuscope.metrics import compute_metrics

    clf, reference, labels = judge_setup(eval_n)
    for snap in snapshots:
        d = snap.pop("denoiser")
        with torch.inference_mode():
            model = DiffusionModel(d, ClassConditioner(tuple(str(c) for c in range(10))), (1, 28, 28))
            request = GenerationRequest(prompts=tuple(str(int(c)) for c in labels), sampler="DPM++ 2M", steps=20,
                                        guidance=2.0)
            images = generate(model, request).images
        report = compute_metrics(images, labels, clf, reference, n_resamples=0)
        snap.update(accuracy=float(report.accuracy), fd=float(report.fd))
        print(f"  {snap['recipe']:>9} step {snap['step']:>5} at {snap['minutes']:5.1f} min: "
              f"accuracy {snap['accuracy']:.3f}, FD {snap['fd']:.2f}", flush=True)


def train_ours(out: Path, steps: int) -> list[dict]:
    """Run the real `diffuscope train` command; one snapshot per checkpoint, timed by the run's metrics.csv."""
    from diffuscope.models.load import load_model

    run = out / "diffuscope-run"
    every = max(1, steps // 5)
    cmd = [sys.executable, "-m", "diffuscope", "train", "--data", "mnist", "--out", str(run), "--max-steps",
           str(steps), "--checkpoint-every", str(every), "--sample-every", "0", "--quiet"]
    toml = out / "ours.toml"
    toml.write_text(f"[train]\nlog_every = {math.gcd(every, 50)}\n")
    print("diffuscope:", " ".join(cmd[2:]), flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([*cmd, "--config", str(toml)], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"diffuscope: the whole command used {cpu_s / 60:.1f} CPU-minutes (user + sys, all threads; start-up, "
          f"data loading and checkpoint saves included)", flush=True)
    elapsed = {}
    for row in (run / "metrics.csv").read_text().splitlines()[1:]:
        fields = row.split(",")
        elapsed[int(fields[0])] = float(fields[-1])
    snaps = []
    for ckpt in sorted((run / "checkpoints").iterdir()):
        model = load_model(ckpt)
        snaps.append({"recipe": "diffuscope", "step": model.step, "minutes": elapsed[model.step] / 60,
                      "denoiser": model.denoiser})
    return snaps


def diffusers_unet():
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(32, 64, 64),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), num_class_embeds=11)


def train_diffusers(budget_s: float, batch_size: int, seed: int = 0) -> list[dict]:
    """diffusers' train_unconditional.py recipe (class labels added), for ``budget_s`` seconds of training."""
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel

    from diffuscope.adapters.diffusers import denoiser_from_diffusers
    from diffuscope.data import load_dataset

    data = load_dataset("mnist")
    images, labels = data.images, data.labels
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    unet = diffusers_unet()
    params = sum(p.numel() for p in unet.parameters())

    def step_fn(net, opt):
        idx = torch.randint(0, len(images), (batch_size,), generator=gen)
        x0, y = images[idx], labels[idx].clone()
        y[torch.rand(batch_size, generator=gen) < 0.1] = 10  # the null class, as diffuscope's cond_dropout
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 1000, (batch_size,), generator=gen)
        pred = net(scheduler.add_noise(x0, noise, t), t, class_labels=y).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    def optimizer(net):
        return torch.optim.AdamW(net.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)

    # Throughput probe on a throwaway copy, to size the cosine schedule to the budget (not counted).
    probe = copy.deepcopy(unet)
    probe_opt = optimizer(probe)
    step_fn(probe, probe_opt)
    t0 = time.perf_counter()
    for _ in range(10):
        step_fn(probe, probe_opt)
    total_steps = max(10, int(budget_s / ((time.perf_counter() - t0) / 10)))
    del probe, probe_opt
    print(f"diffusers: UNet2DModel {params / 1e6:.2f}M params, ~{total_steps} steps in {budget_s / 60:.1f} min",
          flush=True)

    opt = optimizer(unet)
    lr_sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=500, num_training_steps=total_steps)
    ema = EMAModel(unet.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
    marks = [budget_s * k / 6 for k in range(1, 7)]
    snaps, clock, cpu, step = [], 0.0, 0.0, 0
    while marks:
        t0, c0 = time.perf_counter(), time.process_time()
        step_fn(unet, opt)
        lr_sched.step()
        ema.step(unet.parameters())
        clock += time.perf_counter() - t0
        cpu += time.process_time() - c0
        step += 1
        if clock >= marks[0]:
            marks.pop(0)
            snapshot = diffusers_unet()
            ema.copy_to(snapshot.parameters())
            d = denoiser_from_diffusers(snapshot.eval().requires_grad_(False), scheduler)
            snaps.append({"recipe": "diffusers", "step": step, "minutes": clock / 60, "cpu_minutes": cpu / 60,
                          "denoiser": d, "unet": snapshot})
            print(f"  diffusers step {step} at {clock / 60:.1f} min ({cpu / 60:.1f} CPU-minutes)", flush=True)
    return snaps


def diffusers_own_sampler_check(snap: dict, eval_n: int) -> dict:
    """The last diffusers snapshot sampled by diffusers itself (DDIMScheduler, 50 steps, eta 0, no guidance, its
    own loop): shows its curve is the recipe's, not an artefact of diffuscope's adapter or of guidance."""
    from diffusers import DDIMScheduler

    from diffuscope.metrics import compute_metrics

    clf, reference, labels = judge_setup(eval_n)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    scheduler.set_timesteps(50)
    x = torch.randn(eval_n, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for t in scheduler.timesteps:
            eps = snap["unet"](x, t, class_labels=labels).sample
            x = scheduler.step(eps, t, x, eta=0.0).prev_sample
    report = compute_metrics(x, labels, clf, reference, n_resamples=0)
    check = {"step": snap["step"], "sampler": "diffusers DDIMScheduler, 50 steps, eta 0, guidance 1 (its own loop)",
             "accuracy": float(report.accuracy), "fd": float(report.fd)}
    print(f"  diffusers step {check['step']}, sampled by diffusers' own DDIM loop: accuracy {check['accuracy']:.3f}, "
          f"FD {check['fd']:.2f}", flush=True)
    return check


def minutes_to(snaps: list[dict], target: float) -> float | None:
    for s in snaps:
        if s["accuracy"] >= target:
            return s["minutes"]
    return None


def plot(results: dict, floor_fd: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_fd) = plt.subplots(1, 2, figsize=(10, 4))
    for name, snaps in results.items():
        m = [s["minutes"] for s in snaps]
        ax_acc.plot(m, [100 * s["accuracy"] for s in snaps], "o-", label=name)
        ax_fd.plot(m, [s["fd"] for s in snaps], "o-", label=name)
    ax_acc.axhline(100 * TARGET_ACCURACY, color="gray", ls="--", lw=1, label="95% target")
    ax_acc.set(xlabel="training minutes (2 CPU cores)", ylabel="accuracy vs prompt (%)", ylim=(0, 100))
    ax_fd.axhline(floor_fd, color="gray", ls=":", lw=1, label="real-vs-real floor")
    ax_fd.set(xlabel="training minutes (2 CPU cores)", ylabel="FD (classifier features)", yscale="log")
    for ax in (ax_acc, ax_fd):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("MNIST, DPM++ 2M, 20 steps, guidance 2")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--ours-steps", type=int, default=700, help="diffuscope --max-steps (default 700)")
    p.add_argument("--factor", type=float, default=3.0, help="diffusers budget = FACTOR x diffuscope's time")
    p.add_argument("--eval-n", type=int, default=200, help="images per evaluation (default 200)")
    p.add_argument("--diffusers-from", type=Path, metavar="RECIPES.json",
                   help="reuse the diffusers curve of an earlier run (same machine, same eval-n) instead of "
                        "training it again; the output says so")
    a = p.parse_args()
    reused = None
    if a.diffusers_from is not None:
        try:
            reused = json.loads(a.diffusers_from.read_text())
            theirs_reused = reused["results"]["diffusers"]
        except (OSError, ValueError, KeyError) as e:
            sys.exit(f"error: --diffusers-from {a.diffusers_from}: not a recipes.json with a diffusers curve ({e})")
        if reused.get("eval_n") != a.eval_n:
            sys.exit(f"error: --diffusers-from was evaluated at N={reused.get('eval_n')}, not --eval-n {a.eval_n}")
    if a.out.exists() and any(a.out.iterdir()):
        sys.exit(f"error: {a.out} exists and is not empty; choose a new --out")
    a.out.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores", flush=True)

    ours = train_ours(a.out, a.ours_steps)
    budget = a.factor * ours[-1]["minutes"] * 60
    theirs = theirs_reused if reused else train_diffusers(budget, batch_size=64)
    if reused:
        budget = 60 * theirs[-1]["minutes"]
        print(f"diffusers: curve reused from {a.diffusers_from} ({budget / 60:.1f} min), not retrained", flush=True)
    print("evaluating", flush=True)
    evaluate_snapshots(ours, a.eval_n)
    own_check = None
    if not reused:
        evaluate_snapshots(theirs, a.eval_n)
        own_check = diffusers_own_sampler_check(theirs[-1], a.eval_n)
        for snap in theirs:
            snap.pop("unet")

    from diffuscope.data import load_dataset
    from diffuscope.metrics import find_classifier, load_classifier, real_floor
    from diffuscope.models.load import load_model

    clf = load_classifier(find_classifier(load_model("mnist").path))
    floor = real_floor(clf, load_dataset("mnist", split="test"), a.eval_n, n_resamples=0)
    results = {"diffuscope": ours, "diffusers": theirs}
    t_ours, t_theirs = minutes_to(ours, TARGET_ACCURACY), minutes_to(theirs, TARGET_ACCURACY)
    summary = {"eval_n": a.eval_n, "floor_fd": float(floor.fd), "minutes_to_95": {"diffuscope": t_ours,
               "diffusers": t_theirs}, "results": results, "torch_threads": torch.get_num_threads(),
               "diffusers_source": str(a.diffusers_from) if reused else "this run",
               "diffusers_own_sampler_check": own_check if own_check else (reused or {}).get(
                   "diffusers_own_sampler_check")}
    (a.out / "recipes.json").write_text(json.dumps(summary, indent=2))
    plot(results, float(floor.fd), a.out / "recipes.png")

    print("\n| recipe | step | minutes | accuracy | FD |\n|---|---|---|---|---|")
    for name, snaps in results.items():
        for s in snaps:
            print(f"| {name} | {s['step']} | {s['minutes']:.1f} | {100 * s['accuracy']:.1f}% | {s['fd']:.2f} |")
    print(f"\nreal-vs-real floor at N={a.eval_n}: FD {floor.fd:.2f}")

    def fmt(t):
        return f"{t:.1f} min" if t is not None else "not reached"

    print(f"minutes to 95% accuracy: diffuscope {fmt(t_ours)}, diffusers {fmt(t_theirs)} "
          f"(budget {budget / 60:.1f} min)")
    if t_ours is not None and t_theirs is not None:
        print(f"ratio diffuscope / diffusers: {t_ours / t_theirs:.2f}")
    elif t_ours is not None:
        print(f"diffusers did not reach 95% within {a.factor:g}x diffuscope's time: ratio < {1 / a.factor:.2f}")


if __name__ == "__main__":
    main()
