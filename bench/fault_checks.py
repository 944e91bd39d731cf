"""Fault re-checks against the real commands (issue 19); prints one line per check, recorded in docs/training.md.

    python bench/fault_checks.py WORKDIR [--tmpfs DIR]

- SIGKILL during training (at the second checkpoint, and mid-write of a checkpoint), then `--resume latest`:
  final weights compared byte for byte with an uninterrupted run.
- Two `train` into one run folder started in the same instant; a `--resume latest` while the run is training.
- Ctrl-C (SIGINT) during a sweep: exit 130 and the partial report.
- With --tmpfs DIR (root; a fresh tiny tmpfs is mounted there per check): a full disk for `train`, `sample`,
  `sweep`, `autoencoder`, and a read-only file system for `sample` and `train`: one line, and no corrupt newest
  checkpoint.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from diffuscope.io.checkpoint import list_checkpoints, read_manifest

TINY_TOML = """
[model.unet]
base_channels = 16
channel_mult = [1, 2]
num_res_blocks = 1
[train]
batch_size = 32
warmup_steps = 5
sample_every = 0
log_every = 1
"""
PY = [sys.executable, "-m", "diffuscope"]


def train_cmd(run: Path, toml: Path, *extra: str) -> list[str]:
    return [*PY, "train", "--data", "digits", "--out", str(run), "--quiet", "--config", str(toml), *extra]


def report(name: str, ok: bool, detail: str) -> bool:
    print(f"{'HELD' if ok else 'FAILED'}  {name}: {detail}", flush=True)
    return ok


def one_line(err: str) -> bool:
    lines = err.strip().splitlines()
    return len(lines) == 1 and lines[0].startswith("diffuscope: error:")


def sigkill_resume(work: Path, toml: Path, wait_for: int, label: str) -> bool:
    steps = ["--max-steps", "24", "--checkpoint-every", "3"]
    full = work / "full"
    if not full.exists():
        subprocess.run(train_cmd(full, toml, *steps), check=True, capture_output=True)
    run = work / f"killed-{label}"
    proc = subprocess.Popen(train_cmd(run, toml, *steps), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = run / "checkpoints"
    while proc.poll() is None:
        if wait_for == -1:  # mid-write: as soon as a temp checkpoint folder appears
            if ckpts.is_dir() and any(p.name.startswith(".tmp-") for p in ckpts.iterdir()):
                break
        elif len(list_checkpoints(ckpts)) >= wait_for:
            break
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    at = list_checkpoints(ckpts)[-1].name if list_checkpoints(ckpts) else "none"
    r = subprocess.run(train_cmd(run, toml, *steps, "--resume", "latest"), capture_output=True, text=True)
    same = all((full / "checkpoints/step-0000024" / n).read_bytes() == (ckpts / "step-0000024" / n).read_bytes()
               for n in ("model.safetensors", "ema.safetensors"))
    stale = [p.name for p in ckpts.iterdir() if p.name.startswith(".tmp-")]
    return report(f"SIGKILL {label}, resume latest", r.returncode == 0 and same and not stale,
                  f"killed with newest checkpoint {at}; resumed exit {r.returncode}; step 24 weights "
                  f"{'bit-identical' if same else 'DIFFERENT'}; stale temp folders {len(stale)}")


def simultaneous(work: Path, toml: Path) -> bool:
    run = work / "race"
    cmds = [train_cmd(run, toml, "--max-steps", "12", "--checkpoint-every", "6", "--seed", str(s)) for s in (1, 2)]
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    outs = [p.communicate() for p in procs]
    codes = sorted(p.returncode for p in procs)
    refused = [e for (_, e), p in zip(outs, procs) if p.returncode == 2]
    rows = (run / "metrics.csv").read_text().count("\n") - 1
    ok = codes == [0, 2] and len(refused) == 1 and one_line(refused[0]) and rows == 12
    return report("two trainings into one run folder in the same instant", ok,
                  f"exit codes {codes}; refusal: {refused[0].strip() if refused else '-'}; metrics rows {rows}")


def resume_while_training(work: Path, toml: Path) -> bool:
    run = work / "busy"
    proc = subprocess.Popen(train_cmd(run, toml, "--max-steps", "16", "--checkpoint-every", "2"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not list_checkpoints(run / "checkpoints"):
        time.sleep(0.01)
    r = subprocess.run(train_cmd(run, toml, "--max-steps", "16", "--resume", "latest"), capture_output=True, text=True)
    proc.wait()
    ok = r.returncode == 2 and one_line(r.stderr) and "in use" in r.stderr and proc.returncode == 0
    return report("--resume latest while the run is training", ok, f"exit {r.returncode}: {r.stderr.strip()}")


def ctrl_c_sweep(work: Path) -> bool:
    out = work / "sweep-int"
    proc = subprocess.Popen([*PY, "sweep", "--model", "mnist", "--prompt", "all", "--steps", "2,3,4,5,6,8,10,12",
                             "--samplers", "Euler,Heun,DDIM", "--n", "16", "--metrics", "convergence", "--out",
                             str(out), "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a terminal's Ctrl-C: SIGINT at its default (a job started in the background of a
                            # non-interactive shell inherits it ignored, and Python then never raises
                            # KeyboardInterrupt)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(35)  # just after the ~28 s reference on a quiet 2-core machine (slow machines: raise this)
    proc.send_signal(signal.SIGINT)
    so, se = proc.communicate()
    files = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    ok = proc.returncode == 130 and "report.json" in files
    return report("Ctrl-C during a sweep", ok, f"exit {proc.returncode}; wrote {', '.join(files)}; "
                  f"{(so.strip().splitlines() or ['-'])[0]}; stderr: {se.strip()[-200:] or '-'}")


def mount(tmpfs: Path, size: str, ro: bool = False) -> None:
    subprocess.run(["umount", str(tmpfs)], capture_output=True)
    tmpfs.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}" + (",ro" if ro else ""), "tmpfs", str(tmpfs)],
                   check=True)


def full_disk(work: Path, toml: Path, tmpfs: Path) -> list[bool]:
    results = []
    # train: the first checkpoint (~0.5 MB of weights + optimizer state) does not fit in 256 KiB
    for size, label, extra in (("256k", "at the first checkpoint", []), ("1200k", "at a later checkpoint", [])):
        mount(tmpfs, size)
        run = tmpfs / "run"
        r = subprocess.run(train_cmd(run, toml, "--max-steps", "12", "--checkpoint-every", "3", *extra),
                           capture_output=True, text=True)
        ckpts = list_checkpoints(run / "checkpoints")
        intact = True
        if ckpts:
            try:
                read_manifest(ckpts[-1], required=("model.safetensors", "state.pt"))
            except Exception:
                intact = False
        results.append(report(f"full disk ({size} tmpfs): train {label}", r.returncode == 1 and one_line(r.stderr)
                              and intact, f"exit {r.returncode}: {r.stderr.strip()[:160]}; complete checkpoints "
                              f"{[p.name for p in ckpts]}, newest verifies: {intact}"))
    mount(tmpfs, "40k")
    r = subprocess.run([*PY, "sample", "--model", "mnist", "--prompt", "7", "--n", "64", "--steps", "4",
                        "--out", str(tmpfs / "s")], capture_output=True, text=True)
    half = [p.name for p in (tmpfs / "s").glob(".tmp-*")] if (tmpfs / "s").is_dir() else []
    results.append(report("full disk (40k tmpfs): sample --n 64", r.returncode == 1 and one_line(r.stderr)
                          and not half, f"exit {r.returncode}: {r.stderr.strip()[:160]}; temp files left "
                          f"{len(half)}"))
    mount(tmpfs, "20k")
    r = subprocess.run([*PY, "sweep", "--model", "mnist", "--prompt", "7", "--steps", "2,3", "--samplers", "Euler",
                        "--n", "8", "--metrics", "convergence", "--no-progress", "--out", str(tmpfs / "w")],
                       capture_output=True, text=True)
    results.append(report("full disk (20k tmpfs): sweep", r.returncode == 1 and one_line(r.stderr),
                          f"exit {r.returncode}: {r.stderr.strip()[:160]}"))
    mount(tmpfs, "64k")  # the autoencoder's first checkpoint (weights, EMA, optimizer state) does not fit
    r = subprocess.run([*PY, "autoencoder", "--data", "digits", "--downsample", "1", "--base-channels", "8",
                        "--max-steps", "4", "--checkpoint-every", "2", "--eval-every", "0", "--quiet",
                        "--out", str(tmpfs / "ae")], capture_output=True, text=True)
    ckpts = list_checkpoints(tmpfs / "ae" / "checkpoints")
    results.append(report("full disk (64k tmpfs): autoencoder", r.returncode == 1 and one_line(r.stderr)
                          and not ckpts, f"exit {r.returncode}: {r.stderr.strip()[:160]}; complete checkpoints "
                          f"{[p.name for p in ckpts]}"))
    mount(tmpfs, "1m", ro=True)
    for argv in (["sample", "--model", "mnist", "--prompt", "7", "--n", "1", "--steps", "2"],
                 ["train", "--data", "digits", "--max-steps", "2"]):
        r = subprocess.run([*PY, *argv, "--out", str(tmpfs / "x")], capture_output=True, text=True)
        results.append(report(f"read-only file system: {argv[0]}", r.returncode == 2 and one_line(r.stderr),
                              f"exit {r.returncode}: {r.stderr.strip()[:160]}"))
    subprocess.run(["umount", str(tmpfs)], capture_output=True)
    return results


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("work", type=Path)
    p.add_argument("--tmpfs", type=Path)
    p.add_argument("--only", help="comma-separated: kill,race,busy,sweep,disk")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    toml = args.work / "tiny.toml"
    toml.write_text(TINY_TOML)
    only = set((args.only or "kill,race,busy,sweep,disk").split(","))
    results = []
    if "kill" in only:
        results.append(sigkill_resume(args.work, toml, 2, "after the 2nd checkpoint"))
        results.append(sigkill_resume(args.work, toml, -1, "during a checkpoint write"))
    if "race" in only:
        results.append(simultaneous(args.work, toml))
    if "busy" in only:
        results.append(resume_while_training(args.work, toml))
    if "sweep" in only:
        results.append(ctrl_c_sweep(args.work))
    if "disk" in only and args.tmpfs:
        results += full_disk(args.work, toml, args.tmpfs)
    print(f"fault checks: tried {len(results)}, held {sum(results)}")
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
