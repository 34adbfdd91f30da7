"""Load byte-mutated ONNX files with the package's readers and report how each load ended.

Run by ``tests/onnx/test_fuzz.py`` in a subprocess with a timeout, so that a reader that hangs
fails the test instead of blocking the run::

    python tests/onnx/fuzz_worker.py BASE.onnx WORKDIR SEED CASES

For each case it writes one mutation of ``BASE.onnx`` (random byte flips, a random
truncation, or random bytes inserted) to ``WORKDIR``, loads it with ``read_onnx`` or
``read_stored_bounds`` (alternately) and, when that succeeds, ``NNBlock(path,
input_bounds=...)``, and prints one JSON line per case *before* loading (``{"start": i}``)
and one after (``{"case": i, "reader": ..., "outcome": "ok" | "package" | "raw", "type":
..., "message": ...}``). The parent reads the last ``start`` line to name the case that
hung.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import numpy as np


def mutate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """One random mutation of ``data`` and a short description of it."""
    kind = int(rng.integers(4))
    buf = bytearray(data)
    if kind == 0:  # flip a few bits
        positions = rng.integers(len(buf), size=int(rng.integers(1, 5)))
        for p in positions:
            buf[p] ^= 1 << int(rng.integers(8))
        return bytes(buf), f"bit flips at {sorted(int(p) for p in positions)}"
    if kind == 1:  # replace a few bytes by random ones
        positions = rng.integers(len(buf), size=int(rng.integers(1, 9)))
        for p in positions:
            buf[p] = int(rng.integers(256))
        return bytes(buf), f"random bytes at {sorted(int(p) for p in positions)}"
    if kind == 2:  # truncate
        cut = int(rng.integers(len(buf)))
        return bytes(buf[:cut]), f"truncated to {cut} bytes"
    at = int(rng.integers(len(buf)))  # insert random bytes
    extra = bytes(int(b) for b in rng.integers(256, size=int(rng.integers(1, 9))))
    return bytes(buf[:at]) + extra + bytes(buf[at:]), f"{len(extra)} bytes inserted at {at}"


def load(path: Path, reader: str, n_inputs: int) -> None:
    """Load ``path`` with one of the package's readers."""
    if reader == "read_onnx":
        from pyomo_nnrelax import read_onnx

        read_onnx(path)
    elif reader == "read_stored_bounds":
        from pyomo_nnrelax.onnx import read_stored_bounds

        read_stored_bounds(path)
    else:
        import pyomo.environ as pyo

        from pyomo_nnrelax import NNBlock

        m = pyo.ConcreteModel()
        m.nn = NNBlock(path, input_bounds=[(-1.0, 1.0)] * n_inputs)


def outcome(path: Path, reader: str, n_inputs: int) -> dict:
    """How loading ``path`` with ``reader`` ended."""
    from pyomo_nnrelax.errors import NNRelaxError

    try:
        load(path, reader, n_inputs)
    except NNRelaxError as exc:
        return {"outcome": "package", "type": type(exc).__name__, "message": str(exc)}
    except Exception as exc:  # what the test is looking for: a raw exception
        return {
            "outcome": "raw",
            "type": f"{type(exc).__module__}.{type(exc).__name__}",
            "message": str(exc),
            "traceback": traceback.format_exc(),
        }
    return {"outcome": "ok"}


def main(argv: list[str]) -> int:
    base, workdir, seed, cases = Path(argv[0]), Path(argv[1]), int(argv[2]), int(argv[3])
    from pyomo_nnrelax.onnx import read_onnx

    n_inputs = read_onnx(base).n_inputs
    data = base.read_bytes()
    rng = np.random.default_rng(seed)
    for case in range(cases):
        mutated, how = mutate(data, rng)
        path = workdir / f"case{case:04d}.onnx"
        path.write_bytes(mutated)
        readers = ["read_onnx" if case % 2 == 0 else "read_stored_bounds"]
        print(json.dumps({"start": case, "mutation": how}), flush=True)
        result = outcome(path, readers[0], n_inputs)
        if result["outcome"] == "ok":
            readers.append("NNBlock")
            result = outcome(path, "NNBlock", n_inputs)
        record = {"case": case, "mutation": how, "file": path.name, "reader": readers[-1]}
        print(json.dumps({**record, **result}), flush=True)
        if result["outcome"] != "raw":
            path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
