"""The page's models and what its sections share: a ModelEntry per --model (its prompts, real images, limits and
the /api/info description), the image data URLs of the events, and the denoiser that checks a job's cancel token
before each network evaluation. The sections' calls into the library live beside it: web/processes.py (the forward
and reverse processes), web/exercise.py (the sampler x steps exercise), web/claims.py (phases and inversion).

Every job writes what the CLI would write into its own folder ``out/<job id>/`` (PNG files carry the same
AUTOMATIC1111 ``parameters`` and JSON chunks as ``diffuscope sample``), so nothing is lost when the page closes.
"""

from __future__ import annotations

import base64
import functools
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from diffuscope.checks import limits, validate
from diffuscope.checks.errors import UsageError
from diffuscope.core.events import CancelToken

Emit = Callable[[dict], None]
MAX_STEPS = limits.MAX_SERVE_STEPS  # per job (a discrete model allows at most its T); the page asks /api/info
SECTION_STEPS = 50  # the phases' and the inversion's default steps (a distilled student: its own K)
EXERCISE_STEPS = (1, 2, 3, 5, 10, 25, 50, 100)  # the default columns: where the picture breaks, and the lesson's


def exercise_defaults(student=None) -> dict:
    """The exercise's starting samplers and step counts (``ModelEntry.describe``): DDIM and the page's sampler at
    EXERCISE_STEPS; a distilled student's sampler (Euler) around its K (1, K/2, K, 2K, 4K: where it breaks and what
    more steps do to a K-step student; the cells use the model's default formula grid, the student's own exists
    only at K)."""
    from diffuscope.core.defaults import DEFAULT_SAMPLER

    if student is None:
        return {"exercise_samplers": list(dict.fromkeys(("DDIM", DEFAULT_SAMPLER))),
                "exercise_steps": list(EXERCISE_STEPS)}
    k = student.steps
    steps = sorted({1, max(1, k // 2), k, 2 * k, 4 * k})
    return {"exercise_samplers": [student.sampler], "exercise_steps": [s for s in steps if s <= MAX_STEPS]}


def data_url(image: torch.Tensor, *, vp_sigma: float | None = None) -> str:
    """[C, H, W] in [-1, 1] -> a PNG data URL (with ``vp_sigma``: shown in VP scale x / sqrt(1 + sigma^2))."""
    from diffuscope.viz import to_pil

    if vp_sigma is not None:
        image = image / math.sqrt(1 + vp_sigma**2)
    buf = io.BytesIO()
    to_pil(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@dataclass
class ModelEntry:
    """A model the page offers: its name on the page, what was passed to --model, and the loaded model."""

    name: str
    ref: str
    model: Any  # diffuscope.core.model.DiffusionModel
    data: str  # the data set its real images come from
    data_note: str = ""  # where they come from when the model has no data set of its own
    user_data: bool = False  # ``data`` is the user's --real images

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the model's pixel images (decoded, for a latent model)."""
        return tuple(self.model.image_shape)

    @functools.cached_property
    def prompts(self) -> tuple[str, ...]:
        """The prompts the page suggests: class names, or a text model's trained names (read once)."""
        return self.model.trained_prompts()

    @functools.cached_property
    def prompt_index(self):
        """The trained prompts indexed for the nearest-prompt note (built once)."""
        from diffuscope.lesson.prompt_note import PromptIndex

        return PromptIndex(self.prompts)

    def prompt_note(self, prompt: str | None) -> str | None:
        """None for a prompt the model was trained on; else one sentence (lesson/prompt_note.py)."""
        from diffuscope.lesson.prompt_note import prompt_note

        return prompt_note(self.model.conditioner, self.prompt_index, prompt)

    @property
    def one_image_per_prompt(self) -> bool:
        """Whether the model was trained on one image per prompt (the emoji set, data/emoji.py)."""
        return self.model.data_name == "emoji"

    @property
    def cheap_preview(self) -> bool:
        """Whether the model's codec has a cheap linear latent-to-RGB preview (a diffusers pipeline's VAE)."""
        return callable(getattr(self.model.codec, "preview", None))

    @property
    def has_null(self) -> bool:
        """Whether the model has a null condition (guidance is possible)."""
        return self.model.conditioner.has_null

    @functools.cached_property
    def real_set(self):
        """The real images the forward process and inversion pick from (read once): the test split of the model's
        data set, or every image of user-supplied ones (``--real``: nothing is trained on them)."""
        from diffuscope.data import load_dataset

        c, h, _ = self.shape
        return load_dataset(self.data, split="all" if self.user_data else "test", image_size=h, channels=c)

    def resolve(self, *, sampler: str | None = None, steps: int | None = None, guidance: float | None = None,
                fallback_steps: int | None = None):
        """What a job samples with (models/student.py: ``resolve_sampling``, as the CLI): each setting the request
        gave, else a distilled student's own (K steps, Euler, its grid at exactly those, guidance 1), else the
        page's (``fallback_steps``: a section's own step count, default DEFAULT_STEPS)."""
        from diffuscope.models.student import Sampling, resolve_sampling

        fallback = Sampling() if fallback_steps is None else Sampling(steps=fallback_steps)
        return resolve_sampling(self.model, sampler=sampler, steps=steps, guidance=guidance, fallback=fallback)

    def describe(self) -> dict:
        from diffuscope.lesson.demo import default_prompt
        from diffuscope.samplers import SAMPLERS

        schedule = self.model.denoiser.schedule
        chosen = self.resolve()  # the generate form starts here: a distilled student's own settings, or the page's
        student = chosen.student
        section_steps = max(2, student.steps) if student else SECTION_STEPS  # phases and inversion: at least 2
        return {"name": self.name, "class_names": list(self.prompts), "shape": list(self.shape),
                "discrete": bool(schedule.is_discrete), "schedule": schedule.name,
                "max_steps": min(MAX_STEPS, schedule.num_timesteps) if schedule.is_discrete else MAX_STEPS,
                "samplers": [{"name": s.name, "id": s.id} for s in SAMPLERS.values()],
                "default_sampler": chosen.sampler, "default_steps": chosen.steps,
                "default_spacing": chosen.spacing, "default_guidance": chosen.guidance,
                "phases_steps": section_steps, "invert_steps": section_steps, **exercise_defaults(student),
                "student": None if student is None else {"steps": student.steps, "teacher": student.teacher,
                                                         "about": student.describe()},
                "conditioning": self.model.conditioner.kind, "latent": self.model.codec is not None,
                "default_prompt": default_prompt(self.model) or "", "cheap_preview": self.cheap_preview}

    def prompt(self, prompt: str | None) -> str | None:
        """The prompt as the model takes it (None: unconditional); the model's conditioner decides what is valid.
        An empty prompt for a class model means the null prompt (sampling unconditionally)."""
        if not prompt:
            if self.model.conditioner.has_text:
                raise UsageError(f"model {self.name} needs a prompt ({self.model.conditioner.describe()})")
            return None
        return self.model.conditioner.check(validate.prompt(prompt))  # UTF-8, no control characters


def load_entry(ref: str, device: str | torch.device = "cpu", dtype: str | None = None,
               real: str | None = None) -> ModelEntry:
    """A model for the page. Its real images (forward process, inversion) come from its own data set; a model
    without one (a diffusers pipeline) uses ``real`` (`serve --real DATA`), else a built-in set of its channels
    (emoji for colour, mnist for grey), and the page says so."""
    from diffuscope.models.load import load_model

    model = load_model(ref, device=device, dtype=dtype)
    name = model.run_config.get("model_name") or (Path(ref).name if model.run_config.get("pipeline") else str(ref))
    own = model.data_name
    data = own or real or ("emoji" if model.image_shape[0] == 3 else "mnist")
    note = "" if own else (f"this model has no data set of its own: real images from {data}"
                           + ("" if real else " (serve --real DATA to use yours)"))
    entry = ModelEntry(name, str(ref), model, data, note, user_data=real is not None and not own)
    if entry.user_data:
        _ = entry.real_set  # a bad --real fails here, in one line, before the server starts
    return entry


def check_index(entry: ModelEntry, index: int) -> None:
    """Refuse an index outside the model's real images (one line)."""
    count = len(entry.real_set)
    if not 0 <= index < count:
        which = "images" if entry.user_data else "test set"
        raise UsageError(f"image index {index} is outside 0..{count - 1} ({entry.data} {which})")


class _Checked:
    """The denoiser, checking the cancel token before each network evaluation: a cancelled job stops within one
    NFE even inside a sweep or a phase measure, which have no per-step hook of their own."""

    def __init__(self, denoiser, token: CancelToken):
        self.denoiser, self.token = denoiser, token
        self.schedule = denoiser.schedule

    def __call__(self, x, sigma, cond=None):
        self.token.check()
        return self.denoiser(x, sigma, cond)


def checked_model(entry: ModelEntry, token: CancelToken):
    """The entry's model, its denoiser checking ``token`` before each network evaluation."""
    return replace(entry.model, denoiser=_Checked(entry.model.denoiser, token))


def model_device(entry: ModelEntry) -> torch.device:
    """The device the model's denoiser runs on."""
    return next(entry.model.denoiser.parameters()).device

