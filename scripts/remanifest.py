"""Upgrade checkpoints' format-1 manifests (file sizes only) to format 2 (sizes + sha256).

    python scripts/remanifest.py CHECKPOINT [CHECKPOINT ...]

Only manifest.json is rewritten (atomically); the weights and every other file stay bit-identical. Run it only on
checkpoints you trust as they are now: the new hashes vouch for their current content. Sizes must still match
the old manifest, so a truncated file is refused. See diffuscope.io.checkpoint.remanifest.
"""

from __future__ import annotations

import sys

from diffuscope.checks.errors import UsageError
from diffuscope.io.checkpoint import remanifest


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    for path in argv:
        try:
            print(remanifest(path))
        except UsageError as e:
            print(f"remanifest: error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
