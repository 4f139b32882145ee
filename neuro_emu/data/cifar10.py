"""CIFAR-10 from disk as uint8 arrays: JPEG zips (decoded once, cached), python batches, or the
shipped subset.

Sources, in the order :func:`load_cifar10` tries them for a folder:

- ``train.zip`` / ``test.zip``: one 32x32 JPEG per image under ``<split>/<class>/<index>.jpg``
  (DESIGN.md section 7). Decoded once with Pillow into ``<cache_dir>/cifar10-<split>-<key>.npz``,
  the key a hash of the archive's name, size and mtime, so a changed archive is decoded afresh.
- the original python-version batches ``data_batch_1..5`` / ``test_batch`` (in the folder or in its
  ``cifar-10-batches-py`` subfolder): unpickled directly, as fast as reading a cache would be.
  They are pickles, so only point ``root`` at batches you trust.
- ``root="subset"``: :func:`subset_path`, 300 train and 100 test images per class, the original
  JPEG bytes of the first images of each class, in the same zip layout; small enough to need no
  cache.

Images come out in a fixed order, by class (CIFAR-10's order, :data:`CLASSES`) then by the numeric
index in the member name, so two loads of the same archive give identical arrays.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import pickle
import re
import sys
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
DATA_ENV = "NEURO_EMU_CIFAR10"
CACHE_ENV = "NEURO_EMU_CACHE"
SPLITS = ("train", "test")
IMAGE_SHAPE = (32, 32, 3)  # HWC

_REPO_DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10-jpeg"
_BATCH_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
_BATCHES_SUBDIR = "cifar-10-batches-py"
_CACHE_VERSION = 1  # bump when the decoded arrays would change for the same archive
_PROGRESS_MIN = 5000  # images; fewer decode in well under a second
_POOL_MIN = 20000  # images; below this a pool's start-up costs about what it saves (~60 us/image)
_POOL_MAX_WORKERS = 8
_WHAT_TO_PUT = (
    "Put there either train.zip and test.zip (one 32x32 JPEG per image under "
    "<split>/<class>/<index>.jpg) or the original python-version batches (data_batch_1 .. "
    "data_batch_5 and test_batch, directly or in a cifar-10-batches-py subfolder); or pass "
    f"such a folder (root=, or --data on the command line), or set ${DATA_ENV} to one; "
    "root='subset' (--data subset) loads the 3,000 + 1,000 images shipped with the package."
)


class DataError(RuntimeError):
    """A data set is missing, corrupt or not in a format the loader reads: fixable by the user."""


def subset_path() -> Path:
    """The shipped subset zip: 300 train + 100 test images per class, as in the full zips."""
    return Path(__file__).with_name("cifar10_subset.zip")


def load_cifar10(
    split: str,
    root: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Load one CIFAR-10 split as ``images: uint8 [N, 32, 32, 3]`` (HWC) and ``labels: int64 [N]``.

    Args:
        split: ``"train"`` or ``"test"``.
        root: a folder holding ``{train,test}.zip`` or the python batches, or ``"subset"`` for the
            shipped subset. None: ``$NEURO_EMU_CIFAR10``, then ``../shared/data/cifar10-jpeg``
            beside the repository.
        cache_dir: where decoded zips are cached (default ``$NEURO_EMU_CACHE`` or
            ``~/.cache/neuro-emu``). A cache that cannot be read is rebuilt with a warning; one that
            cannot be written only costs a warning.
        progress: show a tqdm bar while decoding many images.

    Raises:
        ValueError: ``split`` is not ``"train"`` or ``"test"``.
        DataError: the data is missing (the message lists every place looked in and what to put
            there), or an archive, member or batch is corrupt or malformed (the message names it).
    """
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    if isinstance(root, str) and root == "subset":
        return _decode_zip(subset_path(), split, progress=progress)
    kind, path = _find_source(split, root)
    if kind == "batches":
        return _load_batches(path, split)
    return _load_zip_cached(path, split, cache_dir, progress)


def evenly_spaced(images: np.ndarray, labels: np.ndarray, count: int | None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images and their labels at evenly spaced positions of a split (all of it when
    ``count`` is None or not smaller): the splits are stored sorted by class, so their first images
    are all of one class."""
    if count is None or count >= len(labels):
        return images, labels
    pick = (np.arange(count) * len(labels)) // count
    return images[pick], labels[pick]


def _find_source(split: str, root: str | Path | None) -> tuple[str, Path]:
    """``("zip", <split>.zip)`` or ``("batches", <folder>)``: the first folder holding ``split``."""
    if root is not None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"CIFAR-10 root {str(root)!r} is not a folder. {_WHAT_TO_PUT}")
        found = _source_in(root, split)
        if found is None:
            raise DataError(
                f"CIFAR-10 {split!r} data not found in {str(root)!r}: no {split}.zip and no "
                f"python batches. {_WHAT_TO_PUT}"
            )
        return found
    looked = []
    env = os.environ.get(DATA_ENV)
    if env:
        folder = Path(env).expanduser()
        found = _source_in(folder, split) if folder.is_dir() else None
        if found is not None:
            return found
        looked.append(f"${DATA_ENV} = {str(folder)!r} ({_why_not(folder, split)})")
        warnings.warn(
            f"${DATA_ENV} = {str(folder)!r} holds no CIFAR-10 {split!r} data; looking further",
            stacklevel=3,
        )
    else:
        looked.append(f"${DATA_ENV} (not set)")
    if _REPO_DATA_DIR.is_dir():
        found = _source_in(_REPO_DATA_DIR, split)
        if found is not None:
            return found
    looked.append(f"{str(_REPO_DATA_DIR)!r} ({_why_not(_REPO_DATA_DIR, split)})")
    places = "".join(f"\n  - {place}" for place in looked)
    raise DataError(f"CIFAR-10 {split!r} data not found. Looked in:{places}\n{_WHAT_TO_PUT}")


def _why_not(folder: Path, split: str) -> str:
    if not folder.exists():
        return "does not exist"
    if not folder.is_dir():
        return "not a folder"
    return f"no {split}.zip and no python batches"


def _source_in(folder: Path, split: str) -> tuple[str, Path] | None:
    archive = folder / f"{split}.zip"
    if archive.is_file():
        return "zip", archive
    for batches in (folder, folder / _BATCHES_SUBDIR):
        if any((batches / name).is_file() for name in _BATCH_FILES[split]):
            return "batches", batches
    return None


# -- python batches ------------------------------------------------------------------------------


def _load_batches(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    names = _BATCH_FILES[split]
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"CIFAR-10 python batches in {str(folder)!r}: {split!r} needs {', '.join(names)}; "
            f"missing {', '.join(missing)}"
        )
    images, labels = [], []
    for name in names:
        x, y = _read_batch(folder / name)
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch: ``{b"data": uint8 [n, 3072] (CHW flattened), b"labels": [n]}``."""
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as e:
        raise DataError(f"CIFAR-10 batch {str(path)!r} cannot be unpickled: {e}") from e
    if not isinstance(batch, dict):
        raise DataError(
            f"CIFAR-10 batch {str(path)!r}: expected a dict, got {type(batch).__name__}"
        )
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise DataError(f"CIFAR-10 batch {str(path)!r}: no b'data' and b'labels' entries")
    data = np.asarray(data)
    labels = np.asarray(labels)
    n = data.shape[0] if data.ndim == 2 else -1
    if data.dtype != np.uint8 or data.shape != (n, 3072) or labels.shape != (n,):
        raise DataError(
            f"CIFAR-10 batch {str(path)!r}: expected data uint8 [n, 3072] and labels [n], got "
            f"data {data.dtype} {list(data.shape)} and labels {list(labels.shape)}"
        )
    if n and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise DataError(f"CIFAR-10 batch {str(path)!r}: labels outside 0..{len(CLASSES) - 1}")
    # [n, 3, 32, 32] CHW -> [n, 32, 32, 3] HWC
    images = np.ascontiguousarray(data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels.astype(np.int64)


# -- JPEG zips -----------------------------------------------------------------------------------


def _load_zip_cached(
    archive: Path, split: str, cache_dir: str | Path | None, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    stat = archive.stat()
    key = f"{archive.name}|{stat.st_size}|{stat.st_mtime_ns}|{split}|v{_CACHE_VERSION}"
    folder = _cache_folder(cache_dir)
    cache = folder / f"cifar10-{split}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    cached = _read_cache(cache, key)
    if cached is not None:
        return cached
    images, labels = _decode_zip(archive, split, progress=progress)
    _write_cache(cache, key, images, labels)
    return images, labels


def _cache_folder(cache_dir: str | Path | None) -> Path:
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "neuro-emu"
    return Path(cache_dir).expanduser()


def _read_cache(cache: Path, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    if not cache.is_file():
        return None
    try:
        with np.load(cache, allow_pickle=False) as npz:
            stored_key, images, labels = str(npz["key"]), npz["images"], npz["labels"]
        n = images.shape[0]
        if (
            stored_key != key
            or images.dtype != np.uint8
            or images.shape != (n, *IMAGE_SHAPE)
            or labels.dtype != np.int64
            or labels.shape != (n,)
        ):
            raise ValueError("content does not match the archive")
    except Exception as e:  # whatever is wrong with a cache file, decoding the archive again fixes
        warnings.warn(
            f"CIFAR-10 cache {str(cache)!r} is unreadable ({e}); rebuilding", stacklevel=4
        )
        return None
    return images, labels


def _write_cache(cache: Path, key: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Written atomically (a temp file beside it, then os.replace): no reader sees half a file."""
    tmp = None
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=cache.parent, prefix=cache.stem + ".", suffix=".tmp", delete=False
        ) as f:
            tmp = f.name
            np.savez(f, key=np.array(key), images=images, labels=labels)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # NamedTemporaryFile makes it 0600
        os.replace(tmp, cache)
    except OSError as e:
        warnings.warn(f"CIFAR-10 cache {str(cache)!r} not written ({e})", stacklevel=4)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _decode_zip(archive: Path, split: str, *, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Decode every ``<split>/<class>/<index>.jpg`` member, ordered by class then index."""
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise DataError(f"CIFAR-10 archive {str(archive)!r} is not a readable zip: {e}") from e
    names, labels = _members(archive, infos, split)
    images = np.empty((len(names), *IMAGE_SHAPE), np.uint8)
    workers = _pool_workers(len(names))
    bar = tqdm(
        total=len(names),
        desc=f"decoding {archive.name} ({split})",
        unit="img",
        disable=not progress or len(names) < _PROGRESS_MIN,
    )
    with bar:
        if workers <= 1:
            with zipfile.ZipFile(archive) as zf:
                for i, name in enumerate(names):
                    images[i] = _decode_member(archive, zf, name)
                    bar.update()
        else:
            chunk = -(-len(names) // (4 * workers))  # a few chunks per worker: an even finish
            starts = range(0, len(names), chunk)
            jobs = [(archive, names[s : s + chunk]) for s in starts]
            # fork: the workers need only this module, and a spawned worker would re-run an
            # unguarded __main__ script. Each worker opens the archive itself (no shared offset).
            # Python >= 3.12 warns that forking a threaded process (torch's) may deadlock the
            # child; these children take no lock a parent thread could hold (zipfile, Pillow,
            # numpy.empty only), so the warning is silenced here and nowhere else.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "This process .* is multi-threaded, use of fork")
                pool = multiprocessing.get_context("fork").Pool(workers)
            with pool:
                for s, block in zip(starts, pool.imap(_decode_members, jobs), strict=True):
                    images[s : s + len(block)] = block
                    bar.update(len(block))
    return images, labels


def _pool_workers(n_images: int) -> int:
    """Processes to decode ``n_images`` with: 1 (no pool) unless there are many images, more than
    two cores and the fork start method."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    if (
        n_images < _POOL_MIN
        or cores <= 2
        or sys.platform == "win32"
        or "fork" not in multiprocessing.get_all_start_methods()
    ):
        return 1
    return min(cores, _POOL_MAX_WORKERS)


_MEMBER = re.compile(r"(?P<cls>[^/]+)/(?P<index>\d+)\.jpe?g", re.IGNORECASE)


def _members(
    archive: Path, infos: list[zipfile.ZipInfo], split: str
) -> tuple[list[str], np.ndarray]:
    """Member names of ``split`` sorted by (class, numeric index), and their labels."""
    prefix = f"{split}/"
    entries = []
    found_classes = set()
    for info in infos:
        if info.is_dir() or not info.filename.startswith(prefix):
            continue
        rest = info.filename[len(prefix) :]
        if rest.rsplit("/", 1)[-1].startswith("."):  # .DS_Store and the like
            continue
        m = _MEMBER.fullmatch(rest)
        if m is None:
            raise DataError(
                f"CIFAR-10 archive {str(archive)!r}: member {info.filename!r} is not "
                f"{split}/<class>/<index>.jpg"
            )
        found_classes.add(m["cls"])
        entries.append((m["cls"], int(m["index"]), info.filename))
    if not entries:
        raise DataError(
            f"CIFAR-10 archive {str(archive)!r} has no {split}/<class>/<index>.jpg members"
        )
    if found_classes != set(CLASSES):
        missing = sorted(set(CLASSES) - found_classes)
        unknown = sorted(found_classes - set(CLASSES))
        raise DataError(
            f"CIFAR-10 archive {str(archive)!r}: {split}/ holds {len(found_classes)} class "
            f"folders, expected the {len(CLASSES)} of CIFAR-10 (missing {missing}, unexpected "
            f"{unknown})"
        )
    order = {name: i for i, name in enumerate(CLASSES)}
    entries.sort(key=lambda e: (order[e[0]], e[1], e[2]))
    labels = np.fromiter((order[e[0]] for e in entries), np.int64, len(entries))
    return [e[2] for e in entries], labels


def _decode_members(job: tuple[Path, list[str]]) -> np.ndarray:
    """Pool worker: decode a block of members into uint8 ``[len(names), 32, 32, 3]``."""
    archive, names = job
    out = np.empty((len(names), *IMAGE_SHAPE), np.uint8)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"CIFAR-10 archive {str(archive)!r} is not a readable zip: {e}") from e
    with zf:
        for i, name in enumerate(names):
            out[i] = _decode_member(archive, zf, name)
    return out


def _decode_member(archive: Path, zf: zipfile.ZipFile, name: str) -> np.ndarray:
    """One member as uint8 ``[32, 32, 3]``; whatever is wrong, a DataError naming the member."""
    where = f"CIFAR-10 archive {str(archive)!r}, member {name!r}"
    try:
        data = zf.read(name)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError) as e:
        raise DataError(f"{where} cannot be read (corrupt or truncated archive): {e}") from e
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.size != IMAGE_SHAPE[1::-1]:
                raise DataError(f"{where} is {im.size[0]}x{im.size[1]}, expected 32x32")
            rgb = im if im.mode == "RGB" else im.convert("RGB")
            return np.asarray(rgb)
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{where} is not a decodable image: {e}") from e
