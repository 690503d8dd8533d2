#!/usr/bin/env python3
"""Writes the two 1 MB texts of the tokenizer benchmark (BENCHMARKS.md).

english.txt: MMLU questions and choices from shared/testdata/eval/mmlu/mmlu.jsonl.
mixed.txt:   the same English interleaved (deterministically) with runs of
             Chinese, Japanese, Korean, Arabic, Cyrillic, Devanagari and emoji,
             about half the bytes non-ASCII: the byte-fallback-heavy case.

Usage: python3 tools/bench/make_tokenizer_corpus.py [--shared ../shared] [--out target/bench]
"""
import argparse
import json
import random
from pathlib import Path

SIZE = 1_000_000
SCRIPTS = [
    (0x4E00, 0x9FFF),   # CJK ideographs
    (0x3040, 0x30FF),   # kana
    (0xAC00, 0xD7A3),   # Hangul
    (0x0600, 0x06FF),   # Arabic
    (0x0400, 0x04FF),   # Cyrillic
    (0x0900, 0x097F),   # Devanagari
    (0x1F600, 0x1F64F), # emoji
]


def cut(text, size):
    b = text.encode()[:size]
    return b.decode(errors="ignore")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=None)
    ap.add_argument("--out", default="target/bench")
    a = ap.parse_args()
    root = Path(__file__).resolve().parents[2]
    shared = Path(a.shared) if a.shared else root.parent / "shared"
    out = root / a.out
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    total = 0
    with open(shared / "testdata/eval/mmlu/mmlu.jsonl") as f:
        for line in f:
            d = json.loads(line)
            q = d.get("question", "") + "\n" + "\n".join(str(c) for c in d.get("choices", [])) + "\n\n"
            parts.append(q)
            total += len(q.encode())
            if total > 3 * SIZE:
                break
    english = "".join(parts)
    (out / "english.txt").write_text(cut(english, SIZE))
    rng = random.Random(1234)
    mixed = []
    n = 0
    words = english.split(" ")
    i = 0
    while n < SIZE:
        chunk = " ".join(words[i:i + rng.randint(3, 12)]) + " "
        i += 12
        lo, hi = rng.choice(SCRIPTS)
        run = "".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(2, 10))) + " "
        mixed.append(chunk + run)
        n += len((chunk + run).encode())
    (out / "mixed.txt").write_text(cut("".join(mixed), SIZE))
    for name in ("english.txt", "mixed.txt"):
        p = out / name
        print(p, p.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
