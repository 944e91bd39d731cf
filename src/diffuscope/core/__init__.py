"""The core every other package stands on: noise schedules, preconditioning (the one contract D(x, sigma, cond)),
conditioning, guidance, the model contract, events, defaults and the exact reference denoisers. Imports nothing above
it (docs/architecture.md)."""
