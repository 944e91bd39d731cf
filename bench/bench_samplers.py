"""Sampler speed on CPU: (1) our samplers' overhead over their network calls, (2) ours vs diffusers' schedulers.

    python bench/bench_samplers.py                         # both parts (a few minutes on 2 cores)
    python bench/bench_samplers.py --part overhead --steps 25
    python bench/bench_samplers.py --part diffusers --compare-steps 10,25 --rounds 2 --threads 1
    python bench/bench_samplers.py --part diffusers --compare-samplers Heun
    python bench/bench_samplers.py --part diffusers --device cuda       # the same comparison on a GPU

(1) Overhead, every sampler, batch 64, on diffuscope's U-Net (EDM preconditioning): the wall time of an N-step run
divided by the time spent inside the denoiser D (preconditioning + network) during that run (target <= 1.03), and
divided by NFE x the fastest of two isolated denoiser calls timed next to the run (noisier on shared cores: a load
burst moves one side only).

(2) Ours vs diffusers on the same diffusers UNet2DModel (~1M parameters, 32x32): Euler / DDIM / DPM++ 2M / Heun /
UniPC at 10, 25 and 50 steps, over the scheduler's own timesteps; diffusers runs its usual loop (set_timesteps,
scale_model_input, UNet, step; a fresh scheduler per run). Runs are interleaved (ours and diffusers back to back, in
a shuffled order, every round) and the table shows medians over rounds of: the wall-time ratio ours / diffusers;
the ratio with the UNet time equalised (median UNet time per call x NFE + each loop's own time outside the UNet),
which removes the load noise; and each loop's own time per step outside the UNet.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from diffuscope.core.precond import EDMDenoiser
from diffuscope.core.schedules import EDMSchedule, make_grid
from diffuscope.samplers import SAMPLERS, CountingDenoiser, initial_noise, make_generators


class Timed(nn.Module):
    """Wraps a module and adds up the wall time spent in its forward calls."""

    def __init__(self, module: nn.Module | Callable):
        super().__init__()
        self.module = module
        self.seconds = 0.0
        self.calls = 0

    def forward(self, *args, **kwargs):
        t = time.perf_counter()
        out = self.module(*args, **kwargs)
        self.seconds += time.perf_counter() - t
        self.calls += 1
        return out

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --- (1) overhead -------------------------------------------------------------------------------------------------


def bench_overhead(args) -> None:
    from diffuscope.nets import UNet, UNetConfig, count_parameters

    config = UNetConfig(
        in_channels=1, image_size=args.size, base_channels=args.base_channels, num_res_blocks=1, num_classes=10
    )
    net = UNet(config).eval()
    denoiser = Timed(EDMDenoiser(net, EDMSchedule()))  # the time of each full denoiser call (precond + net)
    sigmas = make_grid(EDMSchedule(), args.steps).sigmas
    shape = (args.batch, 1, args.size, args.size)
    cond = torch.arange(args.batch) % 10
    sigma_one = torch.full((args.batch,), 1.0, dtype=torch.float64)
    print(
        f"\n(1) sampler overhead: diffuscope UNet ({count_parameters(net) / 1e6:.2f}M params), "
        f"batch {args.batch}, {args.size}x{args.size}, {args.steps} steps, {args.rounds} rounds"
    )
    vs_inside: dict[str, list[float]] = {k: [] for k in SAMPLERS}
    vs_isolated: dict[str, list[float]] = {k: [] for k in SAMPLERS}
    nfe: dict[str, int] = {}
    with torch.inference_mode():
        x0 = initial_noise(shape, make_generators(0, args.batch), float(sigmas[0]))
        denoiser(x0, sigma_one, cond)  # warm-up
        for _ in range(args.rounds):
            order = list(SAMPLERS)
            random.shuffle(order)
            for sampler_id in order:
                one_call = []
                for _ in range(2):  # isolated denoiser calls next to the run
                    t = time.perf_counter()
                    denoiser(x0, sigma_one, cond)
                    one_call.append(time.perf_counter() - t)
                counter = CountingDenoiser(denoiser)
                denoiser.reset()
                gens = make_generators(1, args.batch)
                t = time.perf_counter()
                SAMPLERS[sampler_id].fn(counter, x0, sigmas, cond=cond, generator=gens)
                wall = time.perf_counter() - t
                nfe[sampler_id] = counter.nfe
                vs_inside[sampler_id].append(wall / denoiser.seconds)
                vs_isolated[sampler_id].append(wall / (counter.nfe * min(one_call)))
    print(f"{'sampler':<14}{'NFE':>5}{'run / time in D':>18}{'run / (NFE x call)':>20}")
    for sampler_id, spec in SAMPLERS.items():
        print(
            f"{spec.name:<14}{nfe[sampler_id]:>5}{median(vs_inside[sampler_id]):>18.4f}"
            f"{median(vs_isolated[sampler_id]):>20.4f}"
        )


# --- (2) ours vs diffusers ------------------------------------------------------------------------------------------


def diffusers_setup(args):
    import diffusers

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=32,
        in_channels=1,
        out_channels=1,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D",) * 3,
        up_block_types=("UpBlock2D",) * 3,
        norm_num_groups=8,
    ).eval()
    base = {"num_train_timesteps": 1000, "beta_schedule": "linear", "prediction_type": "epsilon"}
    cases = {
        # name: (scheduler factory, our sampler id)
        "Euler": (lambda: diffusers.EulerDiscreteScheduler(**base, timestep_spacing="trailing"), "euler"),
        "DDIM": (lambda: diffusers.DDIMScheduler(**base, clip_sample=False, set_alpha_to_one=True), "ddim"),
        "DPM++ 2M": (
            lambda: diffusers.DPMSolverMultistepScheduler(
                **base, algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero"
            ),
            "dpmpp_2m",
        ),
        "Heun": (lambda: diffusers.HeunDiscreteScheduler(**base, timestep_spacing="trailing"), "heun"),
        "UniPC": (
            lambda: diffusers.UniPCMultistepScheduler(**base, solver_order=2, final_sigmas_type="zero"), "uni_pc"
        ),
    }
    return unet, cases


def run_diffusers(timed_unet, factory, steps: int, noise: torch.Tensor) -> torch.Tensor:
    scheduler = factory()
    scheduler.set_timesteps(steps, device=noise.device)
    x = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(x, t)
        out = timed_unet(model_input, t).sample
        x = scheduler.step(out, t, x).prev_sample
    return x


def run_ours(timed_unet, factory, sampler_id: str, steps: int, noise: torch.Tensor) -> torch.Tensor:
    from diffuscope.adapters import denoiser_from_diffusers, sigmas_for_timesteps

    scheduler = factory()  # only for its config and timesteps, as a user would take the grid
    scheduler.set_timesteps(steps)
    denoiser = denoiser_from_diffusers(timed_unet, scheduler)
    sigmas = sigmas_for_timesteps(denoiser.schedule, scheduler.timesteps)
    return SAMPLERS[sampler_id].fn(denoiser, noise * float(sigmas[0]), sigmas)


class _Output:
    def __init__(self, sample):
        self.sample = sample


class TimedUNet(nn.Module):
    """A diffusers UNet whose forward time is added up; returns an object with ``.sample`` or a tuple. On CUDA
    each call is synchronised on both sides of the timer (both loops alike), so the time is the UNet's own."""

    def __init__(self, unet: nn.Module, sync: Callable[[], None] = lambda: None):
        super().__init__()
        self.unet = unet
        self.sync = sync
        self.seconds = 0.0
        self.calls = 0

    def forward(self, x, t, class_labels=None, return_dict=True):
        self.sync()
        start = time.perf_counter()
        out = self.unet(x, t, class_labels=class_labels, return_dict=False)[0]
        self.sync()
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return _Output(out) if return_dict else (out,)

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0


def bench_vs_diffusers(args) -> None:
    unet, cases = diffusers_setup(args)
    names = [name.strip() for name in args.compare_samplers.split(",")]
    unknown = sorted(set(names) - set(cases))
    if unknown:
        raise SystemExit(f"unknown --compare-samplers {unknown}; valid: {', '.join(cases)}")
    cases = {name: cases[name] for name in names}
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    unet = unet.to(device)
    timed = TimedUNet(unet, sync)
    params = sum(p.numel() for p in unet.parameters())
    steps_list = [int(s) for s in args.compare_steps.split(",")]
    print(
        f"\n(2) ours vs diffusers: UNet2DModel ({params / 1e6:.2f}M params), batch {args.compare_batch}, 32x32, "
        f"{args.rounds} rounds, interleaved, on {device}"
    )
    noise = torch.randn(args.compare_batch, 1, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    results: dict[tuple[str, int], dict[str, list[float]]] = {}
    with torch.inference_mode():
        for _ in range(3):  # warm-up (on CUDA also the kernels' first launches)
            timed(noise, torch.tensor(500, device=device))
        for _ in range(args.rounds):
            jobs = [(name, steps) for name in cases for steps in steps_list]
            random.shuffle(jobs)
            for name, steps in jobs:
                factory, sampler_id = cases[name]
                rec = results.setdefault((name, steps), {k: [] for k in ("wall", "norm", "ours_us", "diff_us")})
                sides = ["ours", "diffusers"]
                random.shuffle(sides)
                measured = {}
                for side in sides:
                    timed.reset()
                    sync()
                    t = time.perf_counter()
                    if side == "ours":
                        run_ours(timed, factory, sampler_id, steps, noise)
                    else:
                        run_diffusers(timed, factory, steps, noise)
                    sync()
                    wall = time.perf_counter() - t
                    measured[side] = (wall, timed.seconds, timed.calls)
                (w_o, net_o, n_o), (w_d, net_d, n_d) = measured["ours"], measured["diffusers"]
                assert n_o == n_d, (name, steps, n_o, n_d)
                per_call = min(net_o, net_d) / n_o
                rec["wall"].append(w_o / w_d)
                rec["norm"].append((per_call * n_o + (w_o - net_o)) / (per_call * n_d + (w_d - net_d)))
                rec["ours_us"].append((w_o - net_o) / steps * 1e6)
                rec["diff_us"].append((w_d - net_d) / steps * 1e6)
    print(
        f"{'sampler':<10}{'steps':>6}{'wall ours/diff':>16}{'UNet-equalised':>16}"
        f"{'ours loop us/step':>19}{'diffusers us/step':>19}"
    )
    for name in cases:
        for steps in steps_list:
            rec = results[(name, steps)]
            print(
                f"{name:<10}{steps:>6}{median(rec['wall']):>16.3f}{median(rec['norm']):>16.4f}"
                f"{median(rec['ours_us']):>19.0f}{median(rec['diff_us']):>19.0f}"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("all", "overhead", "diffusers"), default="all")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions (medians are reported)")
    parser.add_argument("--steps", type=int, default=10, help="steps for the overhead part")
    parser.add_argument("--batch", type=int, default=64, help="batch for the overhead part")
    parser.add_argument("--size", type=int, default=32, help="image size for the overhead part")
    parser.add_argument("--base-channels", type=int, default=16, help="U-Net width for the overhead part")
    parser.add_argument("--compare-steps", default="10,25,50", help="step counts for ours vs diffusers")
    parser.add_argument("--compare-batch", type=int, default=8, help="batch for ours vs diffusers")
    parser.add_argument("--compare-samplers", default="Euler,DDIM,DPM++ 2M,Heun,UniPC",
                        help="samplers for ours vs diffusers")
    parser.add_argument("--seed", type=int, default=0, help="seed for the shuffled measuring order")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device for ours vs diffusers")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.part in ("all", "overhead"):
        bench_overhead(args)
    if args.part in ("all", "diffusers"):
        bench_vs_diffusers(args)


if __name__ == "__main__":
    main()
