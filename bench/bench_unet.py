"""U-Net speed on CPU: training throughput and inference time for candidate configs.

    python bench/bench_unet.py                      # the full grid, 2 threads
    python bench/bench_unet.py --only 'c32-r1' --rounds 5 --threads 1
    python bench/bench_unet.py --only s28 --save runs.jsonl; python bench/bench_unet.py --load runs.jsonl
    python bench/bench_unet.py --compile            # also try torch.compile on the fastest 1-3M-parameter config

Measurements are interleaved: every round times every config once (in a shuffled order), and the table shows the
median over rounds, so a burst of load from another process moves one sample, not one config. `--save` appends
every sample to a JSON-lines file and `--load` prints the medians over all saved samples, so a long grid can be
measured in short pieces. A training step is forward + backward + AdamW step at batch 64 on random data (speed
does not depend on values).

Two clocks: wall time, and process CPU time divided by the thread count ("cpu" columns). When other processes
keep the cores busy, 2 threads can be ~3x slower than 1 (each OpenMP barrier waits for a descheduled thread);
CPU time then stays near wall time instead of 2x it. Measure with --threads 1 on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import time
from dataclasses import dataclass, field

import torch
from torch.utils.flop_counter import FlopCounterMode

from diffuscope.nets import UNet, UNetConfig, count_parameters


@dataclass
class Candidate:
    name: str
    config: UNetConfig
    train_s: list[float] = field(default_factory=list)  # wall seconds per training step, one entry per round
    infer_s: list[float] = field(default_factory=list)  # wall seconds per inference forward, one per round
    train_cpu: list[float] = field(default_factory=list)  # CPU seconds / threads, per training step
    infer_cpu: list[float] = field(default_factory=list)  # CPU seconds / threads, per inference forward

    def add(self, times: tuple[float, float, float, float]) -> None:
        for samples, t in zip((self.train_s, self.train_cpu, self.infer_s, self.infer_cpu), times):
            samples.append(t)


def candidates() -> list[tuple[str, UNetConfig]]:
    """Names read c{base}-r{blocks}-s{size}[-m{mult}][-a{attention size}]; channel_mult is (1, 2, 2) unless -m."""
    grid = []
    for size in (28, 32):
        low = size // 4  # the lowest feature-map size (three levels)
        specs = [(base, blocks, (1, 2, 2), False) for base in (32, 48, 64) for blocks in (1, 2)]
        specs += [(32, 1, (1, 2, 2), True), (32, 2, (1, 2, 2), True), (48, 1, (1, 2, 2), True)]
        specs += [(24, 1, (1, 2, 2), False), (24, 1, (1, 2, 3), False)]  # the latter: the shipped mnist model
        for base, blocks, mult, attention in specs:
            name = f"c{base}-r{blocks}-s{size}" + ("" if mult == (1, 2, 2) else "-m" + "".join(map(str, mult)))
            name += f"-a{low}" if attention else ""
            config = UNetConfig(
                image_size=size,
                base_channels=base,
                channel_mult=mult,
                num_res_blocks=blocks,
                attention_resolutions=(low,) if attention else (),
                num_classes=10,
            )
            grid.append((name, config))
    return grid


class Runner:
    """One model, optimiser and fixed batch; `train()` and `infer()` each time one call."""

    def __init__(self, model: torch.nn.Module, config: UNetConfig, batch: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        shape = (batch, config.in_channels, config.image_size, config.image_size)
        self.model = model
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        self.x = torch.randn(shape, generator=g)
        self.target = torch.randn(shape, generator=g)
        self.c_noise = torch.randn(batch, generator=g)
        self.labels = torch.randint(0, config.num_classes + 1, (batch,), generator=g)

    def train(self) -> tuple[float, float]:
        """(wall seconds, CPU seconds / threads) of one forward + backward + AdamW step."""
        self.model.train()
        wall, cpu = time.perf_counter(), time.process_time()
        out = self.model(self.x, self.c_noise, self.labels)
        loss = (out - self.target).square().mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return time.perf_counter() - wall, (time.process_time() - cpu) / torch.get_num_threads()

    def infer(self) -> tuple[float, float]:
        """(wall seconds, CPU seconds / threads) of one forward pass without gradients."""
        self.model.eval()
        with torch.no_grad():
            wall, cpu = time.perf_counter(), time.process_time()
            self.model(self.x, self.c_noise, self.labels)
            return time.perf_counter() - wall, (time.process_time() - cpu) / torch.get_num_threads()


def gflop_per_image(model: UNet, config: UNetConfig) -> float:
    """Forward GFLOP per image (2 x multiply-adds), counted by torch's FlopCounterMode."""
    x = torch.zeros(1, config.in_channels, config.image_size, config.image_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, torch.zeros(1), torch.zeros(1, dtype=torch.long))
    return counter.get_total_flops() / 1e9


def measure(runner: Runner, steps: int) -> tuple[float, float, float, float]:
    """Mean over `steps` of (train wall, train cpu, infer wall, infer cpu)."""
    train = [runner.train() for _ in range(steps)]
    infer = [runner.infer() for _ in range(steps)]
    return tuple(statistics.mean(col) for col in (*zip(*train), *zip(*infer)))


def row(name: str, params: int, gflop: float, c: Candidate, batch: int) -> str:
    ips = [batch / t for t in c.train_s]
    med = statistics.median
    return (
        f"{name:<20} {params / 1e6:>6.2f}M {gflop:>9.3f} {batch / med(c.train_s):>10.1f} "
        f"{f'{min(ips):.0f}-{max(ips):.0f}':>9} {batch / med(c.train_cpu):>10.1f} "
        f"{1000 * med(c.infer_s):>10.0f} {1000 * med(c.infer_cpu):>10.0f}"
    )


HEADER = (
    f"{'config':<20} {'params':>7} {'GFLOP/img':>9} {'train img/s':>10} {'(min-max)':>9} {'cpu img/s':>10} "
    f"{'infer ms':>10} {'cpu ms':>10}"
)


def print_table(results: dict[str, Candidate], info: dict[str, tuple[int, float]], batch: int) -> None:
    print(HEADER)
    for name, cand in results.items():
        print(row(name, *info[name], cand, batch), flush=True)


def load(paths: list[str]) -> None:
    """Print the median table over all samples saved with --save (grouped by config and thread count)."""
    results, info, batch = {}, {}, 64
    for path in paths:
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                key = f"{rec['name']} t{rec['threads']}"
                info[key] = (rec["params"], rec["gflop"])
                batch = rec["batch"]
                cand = results.setdefault(key, Candidate(key, UNetConfig()))
                cand.add((rec["train_s"], rec["train_cpu"], rec["infer_s"], rec["infer_cpu"]))
    print(f"samples per config: {sorted({len(c.train_s) for c in results.values()})}")
    print_table(dict(sorted(results.items())), info, batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the table shows medians")
    parser.add_argument("--steps", type=int, default=1, help="timed steps per config per round (averaged)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed train+infer steps per config first")
    parser.add_argument("--only", default="", help="regex on config names, e.g. 'c32-r1|c48-r1-s28'")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile on the fastest 1-3M config")
    parser.add_argument("--save", default="", help="append every sample to this JSON-lines file")
    parser.add_argument("--load", nargs="+", default=[], help="print the table from saved samples; no timing")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.load:
        return load(args.load)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    grid = [(n, c) for n, c in candidates() if re.search(args.only, n)]
    if not grid:
        raise SystemExit(f"no config matches --only {args.only!r}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, {len(grid)} configs")

    runners, info = {}, {}
    for name, config in grid:
        model = UNet(config)
        info[name] = (count_parameters(model), gflop_per_image(model, config))
        runners[name] = Runner(model, config, args.batch, args.seed)
        for _ in range(args.warmup):
            runners[name].train()
            runners[name].infer()
    results = {name: Candidate(name, config) for name, config in grid}

    order = [name for name, _ in grid]
    rng = random.Random(args.seed)
    for r in range(args.rounds):
        rng.shuffle(order)
        start = time.perf_counter()
        for name in order:
            times = measure(runners[name], args.steps)
            results[name].add(times)
            if args.save:
                rec = dict(name=name, threads=args.threads, batch=args.batch, params=info[name][0])
                rec.update(gflop=info[name][1], **dict(zip(("train_s", "train_cpu", "infer_s", "infer_cpu"), times)))
                with open(args.save, "a") as f:
                    f.write(json.dumps(rec) + "\n")
        print(f"\nround {r + 1}/{args.rounds} done in {time.perf_counter() - start:.0f}s; medians so far:")
        print_table(results, info, args.batch)  # after every round, so an interrupted run still reports

    if args.compile:
        compile_best(results, runners, info, args)


def compile_best(results: dict, runners: dict, info: dict, args: argparse.Namespace) -> None:
    """torch.compile the fastest config with 1-3M parameters and time it against eager, interleaved."""
    fits = [n for n in results if 1e6 <= info[n][0] <= 3e6] or list(results)
    best = min(fits, key=lambda n: statistics.median(results[n].train_s))
    config = results[best].config
    print(f"\ntorch.compile on {best}:")
    try:
        model = UNet(config)
        model.load_state_dict(runners[best].model.state_dict())
        compiled = torch.compile(model)
        runner = Runner(compiled, config, args.batch, args.seed)
        start = time.perf_counter()
        runner.train()
        runner.train()  # a second call can recompile (e.g. optimizer state now exists)
        runner.infer()
        runner.infer()
        print(f"  compile + first steps: {time.perf_counter() - start:.0f}s")
    except Exception as e:  # report and go on: compile support varies by platform and compiler
        print(f"  torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        print("  (a cache shared with concurrent runs can be corrupt: try TORCHINDUCTOR_CACHE_DIR=/tmp/own_dir)")
        return
    eager = Candidate(best, config)
    comp = Candidate(best + "+compile", config)
    for _ in range(args.rounds):
        for cand, run in ((eager, runners[best]), (comp, runner)):
            cand.add(measure(run, args.steps))
    print(HEADER)
    for cand in (eager, comp):
        print(row(cand.name, *info[best], cand, args.batch))
    med = statistics.median
    print(
        f"  compile speed-up, train: {med(eager.train_s) / med(comp.train_s):.2f}x wall, "
        f"{med(eager.train_cpu) / med(comp.train_cpu):.2f}x cpu; "
        f"inference: {med(eager.infer_s) / med(comp.infer_s):.2f}x wall"
    )


if __name__ == "__main__":
    main()
