#!/usr/bin/env python3
"""Writes a small Llama GGUF for tests: the first N layers of a Llama GGUF (default 2).

    scripts/make-test-gguf.py IN.gguf OUT.gguf [--layers N]

Everything but the dropped layers is kept byte for byte: the metadata (tokenizer, chat
template, hyperparameters) with `<arch>.block_count` set to N, the embedding, the final norm,
the output head if any, and layers 0..N-1 in their stored types. The result is a real model
(same tokenizer, same first layers) small enough for a software GPU in a browser test.

Standard library only (GGUF v2/v3 little-endian), so a fresh machine needs nothing installed.
"""
import argparse
import struct
import sys

# GGUF metadata value types: struct format of the fixed-size ones.
FIXED = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        size = struct.calcsize("<" + fmt)
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return values[0] if len(values) == 1 else values

    def string(self):
        n = self.take("Q")
        s = self.data[self.pos:self.pos + n]
        self.pos += n
        return s

    def skip_value(self, kind):
        """Skips one value of `kind`, returning its raw bytes."""
        start = self.pos
        if kind in FIXED:
            self.take(FIXED[kind])
        elif kind == STRING:
            self.string()
        elif kind == ARRAY:
            item, count = self.take("I"), self.take("Q")
            for _ in range(count):
                self.skip_value(item)
        else:
            sys.exit(f"make-test-gguf: unknown GGUF value type {kind} at byte {start}")
        return self.data[start:self.pos]


def pack_string(s):
    return struct.pack("<Q", len(s)) + s


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--layers", type=int, default=2)
    args = ap.parse_args()

    data = open(args.input, "rb").read()
    r = Reader(data)
    if data[:4] != b"GGUF":
        sys.exit(f"make-test-gguf: {args.input} is not a GGUF file (magic {data[:4]!r})")
    r.pos = 4
    version, n_tensors, n_kv = r.take("I"), r.take("Q"), r.take("Q")
    if version not in (2, 3):
        sys.exit(f"make-test-gguf: GGUF version {version} is not supported (2 or 3)")

    kvs, arch, alignment = [], None, 32
    for _ in range(n_kv):
        key = r.string()
        kind = r.take("I")
        raw = r.skip_value(kind)
        if key == b"general.architecture":
            arch = raw[8:]
        if key == b"general.alignment":
            alignment = struct.unpack("<I", raw)[0]
        kvs.append([key, kind, raw])
    if arch is None:
        sys.exit("make-test-gguf: no general.architecture in the metadata")
    block_count = arch + b".block_count"
    for kv in kvs:
        if kv[0] == block_count:
            have = struct.unpack("<" + FIXED[kv[1]], kv[2])[0]
            if args.layers < 1 or args.layers > have:
                sys.exit(f"make-test-gguf: --layers {args.layers}: the model has {have}")
            kv[2] = struct.pack("<" + FIXED[kv[1]], args.layers)

    tensors = []
    for _ in range(n_tensors):
        name = r.string()
        n_dims = r.take("I")
        dims = [r.take("Q") for _ in range(n_dims)]
        ggml_type, offset = r.take("I"), r.take("Q")
        tensors.append((name, dims, ggml_type, offset))
    data_start = (r.pos + alignment - 1) // alignment * alignment

    # A tensor's bytes run to the next tensor's offset (the gap is alignment padding).
    ends = sorted(t[3] for t in tensors) + [len(data) - data_start]
    end_of = {off: ends[i + 1] for i, off in enumerate(ends[:-1])}

    def keep(name):
        if not name.startswith(b"blk."):
            return True
        return int(name.split(b".")[1]) < args.layers

    kept = [t for t in tensors if keep(t[0])]
    out_infos, blobs, offset = [], [], 0
    for name, dims, ggml_type, old in kept:
        blob = data[data_start + old:data_start + end_of[old]]
        out_infos.append(pack_string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", ggml_type, offset))
        blob += b"\0" * (-len(blob) % alignment)
        blobs.append(blob)
        offset += len(blob)

    head = b"GGUF" + struct.pack("<IQQ", version, len(kept), len(kvs))
    head += b"".join(pack_string(k) + struct.pack("<I", kind) + raw for k, kind, raw in kvs)
    head += b"".join(out_infos)
    head += b"\0" * (-len(head) % alignment)
    with open(args.output, "wb") as f:
        f.write(head)
        for blob in blobs:
            f.write(blob)
    print(f"make-test-gguf: {args.output}: {args.layers} of the layers, {len(kept)} of {len(tensors)} tensors, {len(head) + offset} bytes")


if __name__ == "__main__":
    main()
