"""The forward and reverse process as pictures, and the phase measures: re-exported from their own modules
(forward_process, reverse_process, phases_report, imagefile) for code written against earlier releases."""

from diffuscope.forward_process import (
    T_EXAMPLE,
    ForwardResult,
    forward_captions,
    forward_process,
    parse_t_list,
    pick_image,
    save_forward,
    snr_db,
)
from diffuscope.imagefile import load_image_file
from diffuscope.phases_report import commitment_strip, find_classify, measure_phases, save_phases
from diffuscope.reverse_process import GIF_PANEL, ReverseResult, reverse_process, save_reverse, show_indices

__all__ = [
    "GIF_PANEL", "T_EXAMPLE", "ForwardResult", "ReverseResult", "commitment_strip", "find_classify",
    "forward_captions", "forward_process", "load_image_file", "measure_phases", "parse_t_list", "pick_image",
    "reverse_process", "save_forward", "save_phases", "save_reverse", "show_indices", "snr_db",
]
