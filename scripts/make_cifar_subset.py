"""Make neuro_emu/data/cifar10_subset.zip from the full CIFAR-10 JPEG zips.

The subset is the first 300 train and the first 100 test images of each class (by the numeric index
in the member name), the members' original JPEG bytes copied unchanged (no re-encoding) under the
same names ``<split>/<class>/<index>.jpg``, so load_cifar10's zip decoder reads it as it reads the
full archives. Stored (JPEG does not compress further) with fixed metadata, so the same input gives
the same bytes.

    python scripts/make_cifar_subset.py [--src ../shared/data/cifar10-jpeg] [--out <zip>]
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from neuro_emu.data.cifar10 import CLASSES, subset_path  # noqa: E402

PER_CLASS = {"train": 300, "test": 100}
MEMBER = re.compile(r"(?P<split>train|test)/(?P<cls>[^/]+)/(?P<index>\d+)\.jpg")


def make_subset(src: Path, out: Path) -> int:
    """Write the subset zip; returns its size in bytes."""
    tmp = out.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as dst:
        for split, per_class in PER_CLASS.items():
            with zipfile.ZipFile(src / f"{split}.zip") as zf:
                chosen = {cls: [] for cls in CLASSES}
                for name in zf.namelist():
                    m = MEMBER.fullmatch(name)
                    if m and m["split"] == split and m["cls"] in chosen:
                        chosen[m["cls"]].append((int(m["index"]), name))
                for cls in CLASSES:
                    first = sorted(chosen[cls])[:per_class]
                    if len(first) != per_class:
                        raise SystemExit(f"{src / f'{split}.zip'}: only {len(first)} {cls} images")
                    for _, name in first:
                        data = zf.read(name)
                        info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
                        info.compress_type = zipfile.ZIP_STORED
                        info.create_system = 3  # unix, whatever the platform making it
                        info.external_attr = 0o644 << 16
                        dst.writestr(info, data)
    tmp.replace(out)
    return out.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=REPO.parent / "shared/data/cifar10-jpeg")
    parser.add_argument("--out", type=Path, default=subset_path())
    args = parser.parse_args()
    size = make_subset(args.src, args.out)
    print(f"{args.out}: {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
