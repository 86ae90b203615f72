"""A deterministic, learnable chat dataset for the quickstart, the tests and the benchmarks.

Short Q&A patterns (capital cities, small sums, opposites) whose answers follow from the
question, so a tiny byte-level model's loss falls visibly when the learning rate is right.

    python -m sweeper.local.sample_data configs/data   # writes train.jsonl and valid.jsonl
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

CAPITALS = {
    "France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin",
    "Japan": "Tokyo", "Egypt": "Cairo", "Peru": "Lima", "Kenya": "Nairobi",
    "Norway": "Oslo", "Greece": "Athens", "Cuba": "Havana", "Chile": "Santiago",
    "Poland": "Warsaw", "Austria": "Vienna", "Ireland": "Dublin", "Portugal": "Lisbon",
}  # fmt: skip
OPPOSITES = {
    "hot": "cold", "big": "small", "up": "down", "fast": "slow", "old": "new",
    "light": "dark", "early": "late", "open": "closed", "full": "empty", "soft": "hard",
}  # fmt: skip
SYSTEM = "Answer in one short sentence."


def _chat(question: str, answer: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


def examples(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` conversational examples, the same for the same seed."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        kind = rng.randrange(3)
        if kind == 0:
            country = rng.choice(sorted(CAPITALS))
            out.append(
                _chat(
                    f"What is the capital of {country}?",
                    f"The capital of {country} is {CAPITALS[country]}.",
                )
            )
        elif kind == 1:
            a, b = rng.randrange(10), rng.randrange(10)
            out.append(_chat(f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."))
        else:
            word = rng.choice(sorted(OPPOSITES))
            out.append(
                _chat(
                    f"What is the opposite of {word}?",
                    f"The opposite of {word} is {OPPOSITES[word]}.",
                )
            )
    return out


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_quickstart(folder: Path, n_train: int = 100, n_valid: int = 20) -> None:
    """Write ``train.jsonl`` and ``valid.jsonl`` into ``folder``."""
    write_jsonl(folder / "train.jsonl", examples(n_train, seed=1))
    write_jsonl(folder / "valid.jsonl", examples(n_valid, seed=2))


if __name__ == "__main__":
    write_quickstart(Path(sys.argv[1] if len(sys.argv) > 1 else "configs/data"))
