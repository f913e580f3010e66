"""Write many small text files of random words (a Zipf-like vocabulary) to count across hosts.

Standard library only, deterministic for a given seed:

    python3 generate_data.py                      # 60 files in data/
    python3 generate_data.py --files 1000 --words 2000
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

VOCABULARY = (  # noqa: SIM905 - a sentence reads better than 80 quoted words
    "the of and to in a is that for it as was with be by on not he this are or his from at which but "
    "have an they you were her she there been one all we their has would when if so no will more can out "
    "up about processing container host shard cluster data node job input output network socket merge "
    "count word sagemaker docker python debian algo leader partial result combine stream file folder key "
    "prefix"
).split()


def text(rng: random.Random, words: int) -> str:
    """``words`` words, 12 to a line; word i of the vocabulary is about 1/(i+1) as common as the first."""
    weights = [1 / (i + 1) for i in range(len(VOCABULARY))]
    chosen = rng.choices(VOCABULARY, weights=weights, k=words)
    lines = [" ".join(chosen[i : i + 12]) for i in range(0, len(chosen), 12)]
    return "\n".join(line.capitalize() + "." for line in lines) + "\n"


def generate(out: Path, files: int, words: int, seed: int) -> list[Path]:
    """Write ``files`` files (doc-0000.txt...) of about ``words`` words each into ``out``; return their paths."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(files):
        path = out / f"doc-{i:04d}.txt"
        path.write_text(text(rng, rng.randint(words // 2, words)), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=here / "data", help="folder to write to (default: ./data)")
    parser.add_argument("--files", type=int, default=60)
    parser.add_argument("--words", type=int, default=500, help="at most this many words per file")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    paths = generate(args.out, args.files, args.words, args.seed)
    print(f"wrote {len(paths)} files to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
