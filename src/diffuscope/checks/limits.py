"""Resource bounds, checked before anything is allocated (docs/limits.md lists them with their reasons).

Every request is sized up front: images x shape x dtype for samples and trajectories, the parameter count of a
network config (built on torch's "meta" device, so nothing is allocated), the bytes of every tensor a safetensors
header names, the pixels of an image file before it is decoded. What exceeds a documented maximum, or the memory of
this machine, is refused in one line that gives the estimate and the limit.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from diffuscope.checks.errors import UsageError

# --- documented maxima (docs/limits.md) ------------------------------------------------------------------------
MAX_STEPS = 10_000  # sampler steps per request (the sweep's reference uses at most a few hundred)
MAX_SERVE_STEPS = 1_000  # sampler steps per job of `diffuscope serve` (a page: each job holds the one worker)
MAX_N = 100_000  # images per request (FD is usually measured on 10k-50k)
MAX_BATCH_SIZE = 8_192  # images per network call or per training step
MAX_GUIDANCE = 100.0  # classifier-free guidance scale (published scales are 1..15)
MAX_TIMESTEPS = 100_000  # T of a discrete schedule (published models use 1000)
MAX_NUM_CLASSES = 100_000  # prompt vocabulary of a class-conditional model
MAX_BASE_CHANNELS = 1_024
MAX_CHANNEL_MULT = 16  # each entry of channel_mult
MAX_RES_BLOCKS = 16  # per level
MAX_HEADS = 64
MAX_PARAMETERS = 2_000_000_000  # network parameters (8 GB of float32)
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 64  # the U-Net's range (nets/unet.py)
MAX_CLASSIFIER_IMAGE_SIZE = 64
MAX_IMAGE_PIXELS = 64 * 1024 * 1024  # decoded pixels of one image file read (data folders, --image, info, --from)
MAX_IMAGE_FILE_BYTES = 256 * 1024 * 1024  # an image file
MAX_TEXT_CHUNK = 64 * 1024  # our own PNG 'diffuscope' and 'parameters' chunks are ~2 KB
MAX_DECOMPRESSED_TEXT = 1024 * 1024  # a compressed PNG text chunk, decompressed (Pillow's own default)
MAX_SAFETENSORS_HEADER = 16 * 1024 * 1024  # bytes of JSON header (the format's own cap is 100 MB)
MAX_IDX_BYTES = 4 * 1024**3  # an IDX data file, decompressed
MAX_PROMPT_CHARS = 1_000
MAX_DISTILL_SUBSTEPS = 1_000  # the teacher's Heun sub-steps per interval of `distill` (docs/distillation.md)
MAX_DISTILL_CHUNK = 1_000_000  # teacher trajectories per chunk of `distill` (also bounded by memory: check_memory)
MAX_SWEEP_MODELS = 4  # models side by side in one `sweep` (`--model A --model B`; docs/distillation.md)
# Share of this machine's available memory one request may plan to use (the rest: the model, activations, Python).
MEMORY_SHARE = 0.5


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _meminfo_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 2**40


def _proc_status_bytes(key: str) -> int:
    """A 'VmSize:'-style line of /proc/self/status in bytes (0 when unknown)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _rlimit_headroom() -> int | None:
    """Address space this process may still map under its soft RLIMIT_AS (``ulimit -v``); None when unlimited."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, ValueError, OSError):  # pragma: no cover - not POSIX
        return None
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    return max(0, soft - _proc_status_bytes("VmSize:"))


CGROUP_ROOT = Path("/sys/fs/cgroup")


def _cgroup_headroom(root: Path | None = None) -> int | None:
    """memory.max - memory.current of this process's cgroup (v2, or v1's limit_in_bytes); None without a limit."""
    root = CGROUP_ROOT if root is None else root
    candidates = [(root / "memory.max", root / "memory.current"),
                  (root / "memory" / "memory.limit_in_bytes", root / "memory" / "memory.usage_in_bytes")]
    try:  # the process's own cgroup (v2: "0::/path"; v1: "N:memory:/path"), tried first
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            parts = line.split(":", 2)
            if len(parts) == 3 and parts[2].strip("/"):
                sub = parts[2].strip("/")
                if parts[0] == "0":
                    candidates.insert(0, (root / sub / "memory.max", root / sub / "memory.current"))
                elif "memory" in parts[1].split(","):
                    candidates.insert(0, (root / "memory" / sub / "memory.limit_in_bytes",
                                          root / "memory" / sub / "memory.usage_in_bytes"))
    except OSError:
        pass
    for limit_file, usage_file in candidates:
        try:
            text = limit_file.read_text().strip()
        except OSError:
            continue
        if text == "max" or not text.isdigit() or int(text) >= 2**60:  # v1 says "no limit" with a huge number
            return None
        try:
            used = int(usage_file.read_text().strip())
        except (OSError, ValueError):
            used = 0
        return max(0, int(text) - used)
    return None


def available_memory() -> int:
    """Bytes of memory available to a new allocation: the least of the machine's available memory (MemAvailable
    on Linux, total physical memory elsewhere), what the process's RLIMIT_AS still allows, and what its cgroup's
    memory.max still allows (a container's limit)."""
    bounds = [_meminfo_available(), _rlimit_headroom(), _cgroup_headroom()]
    return min(b for b in bounds if b is not None)


def check_range(name: str, value: int | float, lo: int | float, hi: int | float) -> None:
    """One line naming the option and its documented range."""
    if not lo <= value <= hi:
        raise UsageError(f"{name} = {value!r} is outside the supported range {lo}..{hi} (docs/limits.md)")


def check_memory(what: str, nbytes: int, *, limit: int | None = None) -> None:
    """Refuse a request whose estimated size exceeds ``limit`` (default: a share of the available memory)."""
    cap = int(available_memory() * MEMORY_SHARE) if limit is None else limit
    if nbytes > cap:
        raise UsageError(f"{what} needs an estimated {human_bytes(nbytes)}, more than the limit of "
                         f"{human_bytes(cap)} (ask for fewer images, steps or a smaller batch)")


def images_bytes(n: int, shape: tuple[int, ...], *, copies: int = 1, itemsize: int = 4) -> int:
    """Bytes of ``copies`` stacks of ``n`` images of ``shape`` (float32 by default)."""
    size = itemsize * copies * n
    for d in shape:
        size *= int(d)
    return size


def check_generation(n: int, shape: tuple[int, ...], steps: int, *, batch_size: int, keep_trajectory: bool = False,
                     what: str = "generation") -> None:
    """Bound a sampling request: its counts, and the images (plus the trajectory, when one is kept) in memory."""
    check_range(f"{what} images (n)", n, 1, MAX_N)
    check_range(f"{what} steps", steps, 1, MAX_STEPS)
    check_range(f"{what} batch size", batch_size, 1, MAX_BATCH_SIZE)
    # Output images, and the working set of one batch (x, denoised, up to 4 sampler history terms).
    total = images_bytes(n, shape) + images_bytes(min(n, batch_size), shape, copies=6)
    if keep_trajectory:  # x_t and denoised at every step
        total += images_bytes(n, shape, copies=2 * (steps + 1))
    check_memory(f"{what} of {n} x {'x'.join(map(str, shape))} images, {steps} steps", total)


def check_schedule(schedule_config, *, where: str = "model") -> None:
    t = schedule_config.num_timesteps
    if not isinstance(t, int) or isinstance(t, bool):
        raise UsageError(f"{where}.schedule.num_timesteps must be an integer, got {str(t)[:80]!r}")
    check_range(f"{where}.schedule.num_timesteps", t, 1, MAX_TIMESTEPS)


# --- safetensors -------------------------------------------------------------------------------------------------

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


def read_safetensors_header(path: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{name: (dtype, shape)} from a safetensors header, checked against the file before any tensor is mapped:
    a bounded header, known dtypes, and every tensor's bytes inside the file and equal to its shape x dtype."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise UsageError(f"{path} is not a valid safetensors file (shorter than its 8-byte header length)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_SAFETENSORS_HEADER or 8 + n > size:
            raise UsageError(f"{path} is not a valid safetensors file: header of {n} bytes (file {size} bytes, "
                             f"limit {MAX_SAFETENSORS_HEADER})")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UsageError(f"{path} is not a valid safetensors file: its header is not JSON") from None
    if not isinstance(header, dict):
        raise UsageError(f"{path} is not a valid safetensors file: its header is not a JSON object")
    data_bytes = size - 8 - n
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        ok = (isinstance(entry, dict) and entry.get("dtype") in _DTYPE_BYTES and isinstance(entry.get("shape"), list)
              and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in entry["shape"])
              and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2
              and all(isinstance(o, int) and not isinstance(o, bool) for o in entry["data_offsets"]))
        if not ok:
            raise UsageError(f"{path} is not a valid safetensors file: bad header entry for tensor {name[:80]!r}")
        start, end = entry["data_offsets"]
        nbytes = _DTYPE_BYTES[entry["dtype"]]
        for d in entry["shape"]:
            nbytes *= d
        if not 0 <= start <= end <= data_bytes or end - start != nbytes:
            raise UsageError(f"{path} is not a valid safetensors file: tensor {name[:80]!r} claims bytes "
                             f"{start}..{end} for {nbytes} bytes of data in a file with {data_bytes}")
        out[name] = (entry["dtype"], tuple(entry["shape"]))
    return out


# --- untrusted images ----------------------------------------------------------------------------------------------


def open_image(path: str | Path, *, max_pixels: int = MAX_IMAGE_PIXELS):
    """A decoded PIL image, read only after its header was checked: file size, pixel count and text chunks are
    bounded, and the decoder's own refusals (decompression bombs, oversized chunks, truncation) are one line."""
    from PIL import Image, PngImagePlugin, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"image not found: {path}")
    if path.stat().st_size > MAX_IMAGE_FILE_BYTES:
        raise UsageError(f"image {path} is {human_bytes(path.stat().st_size)}, more than the limit of "
                         f"{human_bytes(MAX_IMAGE_FILE_BYTES)}")
    im = None
    try:
        im = Image.open(path)
        w, h = im.size
        if w * h > max_pixels:
            raise UsageError(f"image {path} declares {w}x{h} = {w * h:,} pixels, more than the limit of "
                             f"{max_pixels:,}")
        if max(PngImagePlugin.MAX_TEXT_CHUNK, 0) > MAX_DECOMPRESSED_TEXT:  # someone raised Pillow's own cap
            raise UsageError("Pillow's PngImagePlugin.MAX_TEXT_CHUNK was raised above diffuscope's limit")
        im.load()
        return im
    except UsageError:
        if im is not None:
            im.close()
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError,
            struct.error, EOFError) as e:  # what Pillow raises on malformed, oversized or truncated files
        if im is not None:
            im.close()
        raise UsageError(f"cannot read image {path}: {str(e).splitlines()[0][:120] if str(e) else type(e).__name__}"
                         ) from None


def check_request(guidance: float, n: int, shape: tuple[int, ...], steps: int, batch_size: int) -> None:
    """What `generate` is asked for, checked before anything is allocated: a finite guidance scale within
    MAX_GUIDANCE (inf or 1e300 would only produce NaN images), and the counts and memory of the images."""
    import math

    if not (isinstance(guidance, int | float) and math.isfinite(guidance) and 0 <= guidance <= MAX_GUIDANCE):
        raise UsageError(f"guidance must be a finite number in [0, {MAX_GUIDANCE:g}], got {guidance!r}")
    check_generation(n, shape, steps, batch_size=batch_size)
