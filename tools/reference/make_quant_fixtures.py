#!/usr/bin/env python3
"""Quantization block fixtures from the `gguf` package (ggml's Python reference).

For every block type phi3 reads, random blocks (with finite, varied scales)
and their dequantization by gguf-py; for the types gguf-py can quantize, random
f32 rows and the bytes gguf-py's quantizer makes of them.

Writes testdata/quant/<TYPE>.blocks (raw blocks), <TYPE>.dequant.f32 (expected
values, little-endian f32) and, where available, <TYPE>.input.f32 /
<TYPE>.quant (quantizer input and output).

Usage: .venv-ref/bin/python tools/reference/make_quant_fixtures.py
"""
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

# type -> byte offsets of its f16 scale fields within a block
SCALE_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
QUANTIZABLE = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
N_BLOCKS = 8


def main():
    root = Path(__file__).resolve().parents[2]
    out = root / "testdata/quant"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(42)
    for qt, fields in SCALE_FIELDS.items():
        block_size, type_size = quants.GGML_QUANT_SIZES[qt]
        blocks = rng.integers(0, 256, size=(N_BLOCKS, type_size), dtype=np.uint8)
        for b in range(N_BLOCKS):
            for f in fields:
                # scales spanning several magnitudes, both signs (mins may be negative)
                v = np.float16(rng.uniform(-1, 1) * 10.0 ** rng.integers(-4, 1))
                blocks[b, f:f + 2] = np.frombuffer(v.tobytes(), dtype=np.uint8)
        deq = quants.dequantize(blocks.reshape(-1), qt).astype(np.float32).reshape(-1)
        assert deq.size == N_BLOCKS * block_size and np.all(np.isfinite(deq))
        (out / f"{qt.name}.blocks").write_bytes(blocks.tobytes())
        (out / f"{qt.name}.dequant.f32").write_bytes(deq.astype("<f4").tobytes())
        if qt in QUANTIZABLE:
            x = (rng.standard_normal(N_BLOCKS * block_size) * rng.uniform(0.01, 3.0)).astype(np.float32)
            x[:block_size] = 0.0  # an all-zero block
            x[block_size] = 7.5   # a block with one large outlier
            q = quants.quantize(x.reshape(1, -1), qt).reshape(-1)
            (out / f"{qt.name}.input.f32").write_bytes(x.astype("<f4").tobytes())
            (out / f"{qt.name}.quant").write_bytes(q.tobytes())
        print(qt.name, "ok")


if __name__ == "__main__":
    main()
