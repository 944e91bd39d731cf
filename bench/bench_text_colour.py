"""How well all-MiniLM-L6-v2 separates colours: pooled sentence vectors vs token embeddings (issue 18).

For prompt pairs that differ only in a colour word, prints the cosine similarity of the pooled vectors, of the
colour word's token embeddings and of the shared noun's token embeddings; an unrelated pair is the baseline.
A cosine near 1 means the conditioning barely tells the two prompts apart.

    python bench/bench_text_colour.py
"""

from __future__ import annotations

import torch.nn.functional as F

from diffuscope.text.minilm import MiniLM

PAIRS = [("red heart", "blue heart"), ("red heart", "green heart"), ("red apple", "green apple"),
         ("yellow circle", "blue circle"), ("orange book", "blue book"), ("purple square", "red square"),
         ("red heart", "crying cat")]


def main() -> None:
    enc = MiniLM.load()
    print(f"{'pair':<34} {'pooled':>7} {'colour tok':>10} {'noun tok':>8}")
    rows = []
    for a, b in PAIRS:
        tok, _, pooled = enc([a, b])
        cos_pool = F.cosine_similarity(pooled[0], pooled[1], dim=0).item()
        # [CLS] colour noun [SEP]: position 1 is the first word's token, position 2 the second's
        cos_colour = F.cosine_similarity(tok[0, 1], tok[1, 1], dim=0).item()
        cos_noun = F.cosine_similarity(tok[0, 2], tok[1, 2], dim=0).item()
        rows.append((cos_pool, cos_colour))
        print(f"{a + ' / ' + b:<34} {cos_pool:7.3f} {cos_colour:10.3f} {cos_noun:8.3f}")
    n = len(rows) - 1
    print(f"mean over the {n} colour pairs: pooled {sum(r[0] for r in rows[:n]) / n:.3f}, "
          f"colour token {sum(r[1] for r in rows[:n]) / n:.3f}")


if __name__ == "__main__":
    main()
