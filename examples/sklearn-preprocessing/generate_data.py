"""Write a synthetic, census-like CSV dataset: numeric and categorical columns and an income label.

Standard library only, deterministic for a given seed:

    python3 generate_data.py                          # 10000 rows in data/census-0.csv
    python3 generate_data.py --rows 50000 --files 4   # data/census-0.csv ... census-3.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import random
from pathlib import Path

NUMERIC = ["age", "education_num", "hours_per_week", "capital_gain"]
CATEGORICAL = ["workclass", "marital_status", "occupation", "sex"]
LABEL = "income"
COLUMNS = [*NUMERIC, *CATEGORICAL, LABEL]

WORKCLASS = {"Private": 0.70, "Self-emp": 0.12, "Government": 0.15, "Without-pay": 0.03}
MARITAL = {"Married": 0.47, "Never-married": 0.33, "Divorced": 0.14, "Widowed": 0.06}
OCCUPATION = {
    "Prof-specialty": 0.18,
    "Exec-managerial": 0.16,
    "Craft-repair": 0.17,
    "Sales": 0.15,
    "Adm-clerical": 0.16,
    "Other-service": 0.18,
}
SEX = {"Female": 0.48, "Male": 0.52}
# How much each category moves the log-odds of earning more than 50K.
EFFECT = {
    "Self-emp": 0.3,
    "Government": 0.1,
    "Without-pay": -2.0,
    "Married": 0.9,
    "Never-married": -0.9,
    "Prof-specialty": 0.7,
    "Exec-managerial": 0.9,
    "Other-service": -0.8,
    "Adm-clerical": -0.2,
}


def pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def row(rng: random.Random) -> dict[str, object]:
    age = min(90, max(17, round(rng.gauss(39, 13))))
    education_num = min(16, max(1, round(rng.gauss(10, 2.5))))
    hours = min(99, max(1, round(rng.gauss(40, 12))))
    gain = round(rng.expovariate(1 / 8000)) if rng.random() < 0.1 else 0
    cats = {
        "workclass": pick(rng, WORKCLASS),
        "marital_status": pick(rng, MARITAL),
        "occupation": pick(rng, OCCUPATION),
        "sex": pick(rng, SEX),
    }
    logit = -6.0 + 0.04 * age + 0.3 * education_num + 0.03 * hours + 0.0002 * gain
    logit += sum(EFFECT.get(v, 0.0) for v in cats.values())
    rich = rng.random() < 1 / (1 + math.exp(-logit))
    return {
        "age": age,
        "education_num": education_num,
        "hours_per_week": hours,
        "capital_gain": gain,
        **cats,
        LABEL: ">50K" if rich else "<=50K",
    }


def generate(out: Path, rows: int, files: int, seed: int) -> list[Path]:
    """Write ``rows`` rows over ``files`` CSV files (census-0.csv...) into ``out``; return their paths."""
    if rows < files or files < 1:
        raise ValueError(f"need at least one row per file (rows={rows}, files={files})")
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(files):
        path = out / f"census-{i}.csv"
        count = rows // files + (1 if i < rows % files else 0)
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(row(rng) for _ in range(count))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=here / "data", help="folder to write to (default: ./data)")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=1, help="split the rows over this many CSV files")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    for path in generate(args.out, args.rows, args.files, args.seed):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
