"""Exact denoisers: the ideal D(x, sigma, cond) for data whose distribution is known in closed form.

They are the test oracle for samplers, guidance and metrics, and the known-answer model for the step sweep.
For data ~ sum_k w_k N(mu_k, s_k^2 I), x = x0 + sigma * noise has the posterior mean (Tweedie's formula)

    D(x, sigma) = sum_k r_k(x) (s_k^2 x + sigma^2 mu_k) / (s_k^2 + sigma^2),
    r_k(x) proportional to w_k N(x; mu_k, (s_k^2 + sigma^2) I).

A single Gaussian has a closed-form probability-flow ODE solution (``GaussianDenoiser.ode_solution``);
an empirical data set is the mixture with s_k = 0 (Karras et al. 2022, Appendix B.3: the ideal denoiser).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from diffuscope.core.conditioning import ClassCond


def _sigma_column(sigma: Tensor | float, x: Tensor) -> Tensor:
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return sigma.expand(len(x)).reshape(-1, *([1] * (x.ndim - 1)))


class GaussianDenoiser:
    """Data N(mu, s^2 I): D(x, sigma) = (s^2 x + sigma^2 mu) / (s^2 + sigma^2). ``cond`` is ignored."""

    def __init__(self, mu: Tensor | float, s: float):
        self.mu = torch.as_tensor(mu)
        self.s = float(s)

    def __call__(self, x: Tensor, sigma: Tensor | float, cond=None) -> Tensor:
        sig2 = _sigma_column(sigma, x) ** 2
        s2 = self.s**2
        return (s2 * x + sig2 * self.mu.to(x)) / (s2 + sig2)

    def ode_solution(self, x_start: Tensor, sigma_start: float, sigma_end: float) -> Tensor:
        """Exact PF-ODE transport dx/dsigma = (x - D)/sigma: x - mu scales with sqrt(s^2 + sigma^2)."""
        scale = math.sqrt(self.s**2 + sigma_end**2) / math.sqrt(self.s**2 + sigma_start**2)
        mu = self.mu.to(x_start)
        return mu + (x_start - mu) * scale

    def sample(self, n: int, shape: tuple[int, ...], generator: torch.Generator | None = None) -> Tensor:
        return self.mu + self.s * torch.randn((n, *shape), generator=generator, dtype=torch.float64).to(
            torch.get_default_dtype()
        )


class GaussianMixtureDenoiser:
    """Data sum_k w_k N(mu_k, s_k^2 I) with an optional class per component.

    ``cond`` (int64 [B], or None) restricts the posterior to the components of that class: the exact
    class-conditional denoiser. A cond equal to ``num_classes`` (the null class) or None means unconditional.
    """

    def __init__(
        self,
        means: Tensor,
        stds: Tensor | float,
        weights: Tensor | None = None,
        classes: Tensor | None = None,
    ):
        self.means = torch.as_tensor(means)  # [K, *shape]
        k = len(self.means)
        self.stds = torch.as_tensor(stds, dtype=self.means.dtype).expand(k).clone()
        w = torch.ones(k, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.log_weights = (w / w.sum()).log()
        self.classes = torch.arange(k) if classes is None else torch.as_tensor(classes, dtype=torch.long)
        self.num_classes = int(self.classes.max()) + 1

    def log_responsibilities(self, x: Tensor, sigma: Tensor | float, cond=None) -> Tensor:
        """log r_k(x) [B, K] (float64)."""
        xf = x.to(torch.float64).flatten(1)
        means = self.means.to(torch.float64).flatten(1).to(x.device)
        d = xf.shape[1]
        var = self.stds.to(torch.float64).to(x.device) ** 2 + _sigma_column(sigma, xf).to(torch.float64) ** 2
        sq_dist = torch.cdist(xf, means) ** 2  # [B, K]
        log_p = self.log_weights.to(x.device) - 0.5 * sq_dist / var - 0.5 * d * var.log()
        if isinstance(cond, ClassCond):
            cond = cond.labels
        if cond is not None:
            cond = torch.as_tensor(cond, device=x.device).expand(len(x))
            allowed = (self.classes.to(x.device)[None, :] == cond[:, None]) | (cond[:, None] == self.num_classes)
            log_p = log_p.masked_fill(~allowed, -math.inf)
        return log_p - torch.logsumexp(log_p, 1, keepdim=True)

    def __call__(self, x: Tensor, sigma: Tensor | float, cond=None) -> Tensor:
        r = self.log_responsibilities(x, sigma, cond).exp()  # [B, K]
        sig2 = _sigma_column(sigma, x.to(torch.float64).flatten(1)).to(torch.float64) ** 2  # [B, 1]
        s2 = self.stds.to(torch.float64).to(x.device) ** 2  # [K]
        xf = x.to(torch.float64).flatten(1)
        means = self.means.to(torch.float64).flatten(1).to(x.device)
        # sum_k r_k (s_k^2 x + sigma^2 mu_k) / (s_k^2 + sigma^2), split into the x part and the mu part
        a = r * s2 / (s2 + sig2)  # [B, K]
        b = r * sig2 / (s2 + sig2)
        denoised = a.sum(1, keepdim=True) * xf + b @ means
        return denoised.reshape(x.shape).to(x.dtype)

    def sample(
        self, n: int, generator: torch.Generator | None = None, cond: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """n exact data samples and their classes."""
        log_w = self.log_weights.clone()
        if cond is not None:
            log_w = log_w.masked_fill(self.classes != cond, -math.inf)
        k = torch.multinomial(log_w.exp(), n, replacement=True, generator=generator)
        noise = torch.randn((n, *self.means.shape[1:]), generator=generator, dtype=torch.float64)
        x = self.means[k].to(torch.float64) + self.stds[k].to(torch.float64).reshape(-1, *[1] * noise[0].ndim) * noise
        return x.to(self.means.dtype), self.classes[k]


class EmpiricalDenoiser(GaussianMixtureDenoiser):
    """The ideal denoiser of a finite data set (a mixture of deltas): it reproduces training images exactly."""

    def __init__(self, data: Tensor, labels: Tensor | None = None):
        super().__init__(data, 0.0, classes=labels)
