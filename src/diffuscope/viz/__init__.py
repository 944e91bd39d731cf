"""Pictures: image grids, forward/reverse strips, GIFs and plots. Matplotlib is imported only where plots are made."""

from diffuscope.viz.images import image_grid, save_grid, to_pil, to_uint8

__all__ = ["image_grid", "save_grid", "to_pil", "to_uint8"]
