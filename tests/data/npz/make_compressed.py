"""Writes compressed.npz the way numpy's `np.savez_compressed` does, with the standard library
only (numpy is not needed to run nodec's tests): each array is a format-1.0 `.npy` member of a
zip archive, deflated, opened with `force_zip64=True` as numpy opens it.

Run from this directory: `python3 make_compressed.py`. The arrays are stated here, so the test
that reads the archive checks against values that do not come from nodec.
"""
import struct
import zipfile


def npy(shape, values):
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': %s, }" % (
        "(%s)" % "".join("%d," % d for d in shape) if len(shape) == 1 else str(tuple(shape))
    )
    total = 10 + len(header) + 1
    header += " " * ((64 - total % 64) % 64) + "\n"
    return (
        b"\x93NUMPY\x01\x00"
        + struct.pack("<H", len(header))
        + header.encode("latin1")
        + b"".join(struct.pack("<d", v) for v in values)
    )


arrays = {
    "W": ((2, 3), [1.0, -2.0, 3.5, 0.25, 1e-300, 6.0]),
    "k": ((), [0.5]),
    # A long, regular vector: deflate shrinks it, so the entry really is compressed.
    "ramp": ((1000,), [0.25 * i for i in range(1000)]),
}

with zipfile.ZipFile("compressed.npz", "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as z:
    for name, (shape, values) in arrays.items():
        with z.open(name + ".npy", "w", force_zip64=True) as f:
            f.write(npy(shape, values))
