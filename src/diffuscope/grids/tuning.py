"""Step schedules tuned per model: the sigma grid that brings a sampler closest to a high-NFE teacher.

Dynamic programming over a fine grid, as OSS ("Optimal Stepsize for Diffusion Sampling", Pei et al. 2025) does it
(GITS, Chen et al. 2024, searches the same candidate set with a cost matrix from teacher states):

- the teacher solves the probability-flow ODE on a fine grid f_0 > ... > f_{M-1} > f_M = 0 from calibration noise
  and records its state x*_j at every f_j and its final image x*_M;
- the student (the sampler being tuned) starts at f_0 from the same noise; node (k, j) is the best student state
  that reaches f_j in exactly k steps, "best" meaning nearest (mean squared error) to the teacher's x*_j. From each
  node of level k - 1 one network evaluation gives the denoised image there; every later fine point j is then one
  student step away, with the student's own history (a multistep sampler's previous derivatives) carried along
  the node's path;
- a K-step grid is the path whose K-th step, from a level K - 1 node to sigma = 0, lands nearest to x*_M.

The levels do not depend on K, so one pass up to the largest K tunes every step count at once: about K_max x M
network evaluations of the calibration batch. Only samplers whose step can be written as (state, denoised, history)
-> (state, history) are tunable (STEPPERS); their steps are the samplers' own formulas (a test runs each stepper
along a grid and compares it with the sampler function).

After the search (and its refinement), ``learn_grid`` can free the step times from the fine grid: gradient descent
on the final error through the network (LD3, Tong et al. 2025), for the samplers whose step is plain arithmetic of
the sigmas (steppers.DIFFERENTIABLE).

Pure functions over a denoiser D(x, sigma, cond); guidance, if any, is the caller's wrapper around D.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from diffuscope.checks.errors import UsageError, quote
from diffuscope.core.schedules import check_sigmas
from diffuscope.samplers import get_sampler
from diffuscope.samplers.steppers import History, differentiable_stepper, stepper

# --- the teacher ------------------------------------------------------------------------------------------------


def teacher_states(denoiser: Callable, noise: Tensor, fine: Tensor, *, cond=None, teacher: str = "iPNDM",
                   batch_size: int = 64) -> Tensor:
    """The teacher's states [M + 1, B, ...] at every point of the fine grid ``fine`` (M + 1 sigmas ending at 0)
    from ``noise`` (standard normal, [B, ...]): x*_0 = noise * f_0, ..., x*_M = its final image."""
    spec = get_sampler(teacher)
    if not spec.deterministic:
        raise UsageError(f"the teacher must be deterministic, got {quote(spec.name)}")
    sig = check_sigmas(fine)
    out = torch.empty((len(sig), *noise.shape), dtype=noise.dtype)
    for start in range(0, len(noise), batch_size):
        rows = slice(start, start + batch_size)

        def record(info, rows=rows):
            out[info.i, rows] = info.x.to(out.dtype).cpu()

        c = None if cond is None else cond[rows]
        final = spec.fn(denoiser, noise[rows] * sig[0], fine.to(noise.device), cond=c, callback=record)
        out[-1, rows] = final.to(out.dtype).cpu()
    return out


# --- the search ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """The batch grids are tuned on: standard-normal ``noise`` [B, ...], its conditions (None: unconditional) and
    the teacher's ``states`` at every point of the fine grid (``teacher_states``: [M + 1, B, ...], the last one its
    final images)."""

    noise: Tensor
    states: Tensor
    cond: Any = None

    @property
    def final(self) -> Tensor:
        """The teacher's final images, where the noise lives."""
        return self.states[-1].to(self.noise.device)


@dataclass(frozen=True)
class Learning:
    """How ``learn_grid`` descends (LD3, Tong et al. 2025): Adam on the step times' log-sigma shares."""

    iterations: int = 50
    learning_rate: float = 0.02
    batch_size: int = 32  # calibration images per iteration
    seed: int = 0  # the order mini-batches are drawn in


@dataclass(frozen=True)
class TunedGrid:
    steps: int
    sigmas: list[float]  # steps + 1, strictly decreasing, last 0
    calibration_mse: float  # mean squared error of the final images to the teacher's (calibration batch)


@dataclass
class _Node:
    x: Tensor
    hist: History
    path: tuple[int, ...]  # fine-grid indices visited, f_0 first


def _mse(a: Tensor, b: Tensor) -> float:
    return float(((a - b) ** 2).mean())


def _tile(cond, k: int):
    """A batch of conditions (class labels or a conditioning.Cond) repeated k times, as the stacked nodes are."""
    from diffuscope.core.conditioning import Cond

    return Cond.cat([cond] * k) if isinstance(cond, Cond) else torch.cat([cond] * k)


def _denoise_nodes(denoiser: Callable, nodes: dict[int, _Node], sig: list[float], cond, batch_size: int
                   ) -> dict[int, Tensor]:
    """D at every node of a level: the nodes' states stacked into batches of about ``batch_size`` images, each row
    with its own sigma (one network call per batch, not per node)."""
    keys = list(nodes)
    b = len(nodes[keys[0]].x)
    per_call = max(1, batch_size // b)
    out = {}
    for start in range(0, len(keys), per_call):
        chunk = keys[start:start + per_call]
        x = torch.cat([nodes[j].x for j in chunk])
        sigma = torch.cat([torch.full((b,), sig[j], dtype=torch.float64) for j in chunk]).to(x.device)
        c = None if cond is None else _tile(cond, len(chunk))
        denoised = denoiser(x, sigma, c).to(x.dtype)
        for m, j in enumerate(chunk):
            out[j] = denoised[m * b:(m + 1) * b]
    return out


def search_grids(denoiser: Callable, calibration: Calibration, fine: Tensor, steps: Sequence[int], *, sampler: str,
                 batch_size: int = 64, progress: Callable[[int, int], None] | None = None) -> dict[int, TunedGrid]:
    """Tune one grid per step count in ``steps`` for ``sampler`` by dynamic programming over ``fine`` (see the
    module notes) on the ``calibration`` batch and its teacher states; ``progress(k, K_max)`` is called after each
    level."""
    noise, states, cond = calibration.noise, calibration.states, calibration.cond
    step = stepper(sampler)
    sig = check_sigmas(fine)
    m = len(sig) - 1  # fine points with sigma > 0: f_0 .. f_{M-1}; f_M = 0
    wanted = sorted(set(int(k) for k in steps))
    if not wanted or wanted[0] < 1:
        raise UsageError(f"step counts must be positive integers, got {list(steps)}")
    if wanted[-1] > m:
        raise UsageError(f"{wanted[-1]} steps need a fine grid of at least {wanted[-1]} points (it has {m}); "
                         f"raise the fine grid's steps")
    device = noise.device
    target = [states[j].to(device) for j in range(m + 1)]
    level = {0: _Node(noise * sig[0], (), (0,))}
    found: dict[int, TunedGrid] = {}
    with torch.inference_mode():
        for k in range(1, wanted[-1] + 1):
            denoised = _denoise_nodes(denoiser, level, sig, cond, batch_size)
            if k in wanted:  # the k-th step goes to sigma = 0 and lands on denoised (as every sampler here)
                best = min(level, key=lambda i: _mse(denoised[i], target[m]))
                path = level[best].path
                found[k] = TunedGrid(k, [sig[i] for i in path] + [0.0], _mse(denoised[best], target[m]))
            if k == wanted[-1]:
                break
            nxt: dict[int, _Node] = {}
            for j in range(k, m):  # level k lives on f_k .. f_{M-1}
                choice = None
                for i, node in level.items():
                    if i >= j:
                        continue
                    x, hist = step(node.x, denoised[i], sig[i], sig[j], node.hist)
                    err = _mse(x, target[j])
                    if choice is None or err < choice[0]:
                        choice = (err, x, hist, (*node.path, j))
                if choice is not None:
                    nxt[j] = _Node(choice[1], choice[2], choice[3])
            level = nxt
            if progress is not None:
                progress(k, wanted[-1])
    return found


# --- refinement on the final error ----------------------------------------------------------------------------


def _final(denoiser: Callable, step, x: Tensor, hist, sigmas, cond) -> Tensor:
    """The sampler's final image, continuing from state ``(x, hist)`` at ``sigmas[0]`` along ``sigmas`` (floats, or
    a tensor that may carry gradients to the step times)."""
    for i in range(len(sigmas) - 1):
        sigma = torch.as_tensor(sigmas[i], dtype=torch.float64, device=x.device)
        denoised = denoiser(x, sigma.expand(len(x)), cond).to(x.dtype)
        if i == len(sigmas) - 2:  # every sampler here ends on the denoised image at its last sigma
            return denoised
        x, hist = step(x, denoised, sigmas[i], sigmas[i + 1], hist)
    raise AssertionError("unreachable: a grid has at least one step")


def refine_grid(denoiser: Callable, calibration: Calibration, fine: Tensor, grid: TunedGrid, *, sampler: str,
                rounds: int = 1) -> TunedGrid:
    """Coordinate descent on the quantity the search stands in for, the final images' error to the teacher's
    (``calibration.final``): each inner sigma of ``grid`` in turn moves to the neighbouring fine-grid sigma
    (up or down) when that lowers the calibration error. The DP's per-level criterion (nearest to the teacher's
    state) is greedy, and a few-step path that strays from the teacher midway can end nearer it; one round costs
    about K^2 network evaluations of the calibration batch for K steps (the path's prefix is reused)."""
    noise, final, cond = calibration.noise, calibration.final, calibration.cond
    step = stepper(sampler)
    sig = check_sigmas(fine)
    index = {s: i for i, s in enumerate(sig)}
    path = [index[s] for s in grid.sigmas]  # fine indices, the last = M (sigma 0)
    best = grid.calibration_mse
    with torch.inference_mode():
        for _ in range(rounds):
            improved = False
            for pos in range(1, len(path) - 1):
                # states along the current path up to pos - 1 (the prefix every candidate shares)
                x, hist = noise * sig[0], ()
                for i in range(pos - 1):
                    s0, s1 = sig[path[i]], sig[path[i + 1]]
                    d = denoiser(x, torch.full((len(x),), s0, dtype=torch.float64, device=x.device), cond)
                    x, hist = step(x, d.to(x.dtype), s0, s1, hist)
                for new in (path[pos] - 1, path[pos] + 1):
                    if not path[pos - 1] < new < path[pos + 1]:
                        continue
                    cand = [*path[:pos], new, *path[pos + 1:]]
                    out = _final(denoiser, step, x, hist, [sig[i] for i in cand[pos - 1:]], cond)
                    err = _mse(out, final)
                    if err < best:
                        best, path, improved = err, cand, True
                        break
            if not improved:
                break
    return TunedGrid(grid.steps, [sig[i] for i in path], best)


# --- learned step times ---------------------------------------------------------------------------------------


def _grid_from_logits(logits: Tensor, log_max: float, log_min: float) -> Tensor:
    """Sigmas sigma_max = s_0 > s_1 > ... > s_(K-1) >= sigma_min, then 0, from K logits: softmax(logits) are the
    shares of [log sigma_min, log sigma_max] each step covers, the K-th share the slack below s_(K-1). Any logits give
    a valid grid, so the optimiser needs no constraint."""
    shares = torch.softmax(logits, 0)
    log_sigmas = log_max - (log_max - log_min) * torch.cumsum(shares, 0)[:-1]
    return torch.cat([logits.new_tensor([log_max]).exp(), log_sigmas.exp(), logits.new_zeros(1)])


def _logits_from_grid(sigmas: list[float], log_min: float) -> Tensor:
    logs = torch.tensor(sigmas[:-1], dtype=torch.float64).log()
    gaps = torch.cat([logs[:-1] - logs[1:], (logs[-1:] - log_min).clamp_min(1e-3)])
    return gaps.clamp_min(1e-6).log()


def _calibration_mse(denoiser, step, noise, sigmas, final, cond, batch_size) -> float:
    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(noise), batch_size):
            rows = slice(start, start + batch_size)
            c = None if cond is None else cond[rows]
            out = _final(denoiser, step, noise[rows] * sigmas[0], (), sigmas, c)
            total += float(((out - final[rows]) ** 2).sum())
    return total / final.numel()


def learn_grid(denoiser: Callable, calibration: Calibration, grid: TunedGrid, *, sampler: str, sigma_min: float,
               learning: Learning | None = None, progress: Callable[[int, float], None] | None = None) -> TunedGrid:
    """Step times learned by gradient descent on the final error (LD3, Tong et al. 2025, without its slack term):
    starting from ``grid``, Adam moves the sigmas (any value in [sigma_min, sigma_max], not only fine-grid points)
    to lower the mean squared error of the sampler's final images to the teacher's (``calibration.final``),
    through the network, on mini-batches of the calibration noise (``learning``: iterations, rate, batch, order).
    The search's greedy per-level criterion only stands in for that error; the gradient follows it. Returns the
    learned grid if it is better on the whole calibration batch, else ``grid``. Each iteration costs K network
    calls forward and backward on ``learning.batch_size`` images."""
    learning = learning or Learning()
    iterations, batch_size = learning.iterations, learning.batch_size
    noise, final, cond = calibration.noise, calibration.final, calibration.cond
    step = differentiable_stepper(sampler)
    if grid.steps < 2 or iterations == 0:
        return grid  # one step (sigma_max -> 0) has nothing to learn
    log_max, log_min = math.log(grid.sigmas[0]), math.log(sigma_min)
    logits = _logits_from_grid(grid.sigmas, log_min).requires_grad_(True)
    optimiser = torch.optim.Adam([logits], lr=learning.learning_rate)
    order = torch.Generator().manual_seed(learning.seed)
    n = len(noise)
    for it in range(iterations):
        rows = torch.randperm(n, generator=order)[:batch_size].to(noise.device)
        sigmas = _grid_from_logits(logits, log_max, log_min).to(noise.device)
        c = None if cond is None else cond[rows]
        out = _final(denoiser, step, noise[rows] * sigmas[0], (), sigmas, c)
        loss = ((out - final[rows]) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if progress is not None:
            progress(it + 1, loss.item())
    learned = _grid_from_logits(logits.detach(), log_max, log_min)
    mse = _calibration_mse(denoiser, step, noise, learned.to(noise.device), final, cond, batch_size)
    if mse >= grid.calibration_mse:
        return grid
    return TunedGrid(grid.steps, [float(s) for s in learned], mse)


# --- evaluation on other seeds ------------------------------------------------------------------------------


def solve(denoiser: Callable, noise: Tensor, sigmas: Tensor, *, sampler: str, cond=None, batch_size: int = 64
          ) -> Tensor:
    """The sampler's final images from ``noise`` (standard normal) on the grid ``sigmas``, in batches."""
    spec = get_sampler(sampler)
    out = []
    with torch.inference_mode():
        for start in range(0, len(noise), batch_size):
            rows = slice(start, start + batch_size)
            c = None if cond is None else cond[rows]
            out.append(spec.fn(denoiser, noise[rows] * float(sigmas[0]), sigmas.to(noise.device), cond=c).cpu())
    return torch.cat(out)


def rmse_per_image(images: Tensor, reference: Tensor) -> Tensor:
    """Root mean squared error of each image to its reference, in [-1, 1] units ([N]); x 127.5 = grey levels."""
    return ((images.float() - reference.float()) ** 2).flatten(1).mean(1).sqrt()
