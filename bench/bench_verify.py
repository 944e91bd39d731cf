"""What verifying a checkpoint costs: load_model with the sha256 check of every manifest file vs. without it,
measured side by side (alternating, median of --repeat runs) on one model (default: the shipped mnist).

    python bench/bench_verify.py [--model mnist] [--repeat 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

from diffuscope.io import checkpoint
from diffuscope.io.checkpoint import read_manifest, resolve_checkpoint
from diffuscope.models.load import load_model


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="mnist")
    p.add_argument("--repeat", type=int, default=15)
    args = p.parse_args()
    ckpt = resolve_checkpoint(args.model)
    size = sum(e["size"] for e in read_manifest(ckpt)["files"].values())
    load_model(args.model)  # warm the page cache and imports
    with_hash, without, hash_only = [], [], []
    for _ in range(args.repeat):
        t = time.perf_counter()
        load_model(args.model)
        with_hash.append(time.perf_counter() - t)
        with mock.patch.object(checkpoint, "sha256_file", side_effect=lambda f: None), \
                mock.patch.object(checkpoint.validate, "parse_manifest", wraps=_no_hash(checkpoint.validate)):
            t = time.perf_counter()
            load_model(args.model)
            without.append(time.perf_counter() - t)
        t = time.perf_counter()
        for name in read_manifest(ckpt)["files"]:
            checkpoint.sha256_file(ckpt / name)
        hash_only.append(time.perf_counter() - t)
    a, b, h = (statistics.median(v) * 1000 for v in (with_hash, without, hash_only))
    print(f"{args.model}: {size / 1e6:.1f} MB in the manifest")
    print(f"load_model with sha256 verification: {a:.1f} ms; without: {b:.1f} ms; ratio {a / b:.2f}")
    print(f"sha256 of every manifest file alone: {h:.1f} ms ({size / 1e6 / (h / 1000):.0f} MB/s)")


def _no_hash(validate):
    """parse_manifest with every recorded sha256 replaced by None, so the comparison skips only the hashing."""
    real = validate.parse_manifest

    def parse(raw, where):
        m = real(raw, where)
        return validate.Manifest(m.format, m.step, {n: validate.FileEntry(e.size, None) for n, e in m.files.items()},
                                 m.source)

    return parse


if __name__ == "__main__":
    main()
