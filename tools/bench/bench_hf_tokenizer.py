#!/usr/bin/env python3
"""Times the Hugging Face `tokenizers` package on the benchmark texts.

Usage: python tools/bench/bench_hf_tokenizer.py TOKENIZER_JSON FILE... [--reps 7]
Prints the median seconds and MB/s per file (one call on the whole text, or
with --lines one encode_batch call over its lines), and the token count.
"""
import argparse
import statistics
import time

from tokenizers import Tokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tokenizer_json")
    ap.add_argument("files", nargs="+")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--lines", action="store_true", help="encode each line separately (encode_batch, all threads)")
    a = ap.parse_args()
    tok = Tokenizer.from_file(a.tokenizer_json)
    for path in a.files:
        text = open(path, encoding="utf-8").read()
        size = len(text.encode())
        times = []
        n = 0
        for _ in range(a.reps):
            t = time.perf_counter()
            if a.lines:
                n = sum(len(e.ids) for e in tok.encode_batch(text.split("\n"), add_special_tokens=False))
            else:
                n = len(tok.encode(text, add_special_tokens=False).ids)
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        print(f"{path}: {size} bytes, {n} tokens, median {med * 1e3:.1f} ms, {size / med / 1e6:.2f} MB/s (min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f})")


if __name__ == "__main__":
    main()
