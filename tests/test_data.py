"""neuro_emu.data: CIFAR-10 sources (shipped subset, zips, python batches), their errors and cache,
and the batched augmentation / loader. The full archives are not needed: zips and batches are
written into tmp_path."""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from neuro_emu.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CLASSES,
    DATA_ENV,
    BatchLoader,
    DataError,
    augment_batch,
    load_cifar10,
    normalize,
    subset_path,
)
from neuro_emu.data import cifar10 as cifar10_mod

SUBSET_N = {"train": 300, "test": 100}  # images per class


def _jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _write_zip(path, split="train", per_class=2, *, bad=None, drop_class=None, seed=0):
    """A tiny ``<split>/<class>/<index>.jpg`` zip; ``bad = (member, bytes)`` replaces one member."""
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w") as zf:
        for cls in CLASSES:
            if cls == drop_class:
                continue
            for i in range(per_class):
                name = f"{split}/{cls}/{i:04d}.jpg"
                data = _jpeg(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
                if bad is not None and bad[0] == name:
                    data = bad[1]
                zf.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def subset():
    return {split: load_cifar10(split, "subset", progress=False) for split in ("train", "test")}


# -- sources -------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "test"])
def test_subset_shapes_balance_order(subset, split):
    images, labels = subset[split]
    n = SUBSET_N[split]
    assert images.shape == (10 * n, 32, 32, 3) and images.dtype == np.uint8
    assert labels.shape == (10 * n,) and labels.dtype == np.int64
    assert np.array_equal(labels, np.repeat(np.arange(10), n))  # by class, then index
    # the first image of each class is member <split>/<class>/0000.jpg, decoded as Pillow does
    with zipfile.ZipFile(subset_path()) as zf:
        for c in (0, 9):
            raw = zf.read(f"{split}/{CLASSES[c]}/0000.jpg")
            assert np.array_equal(images[c * n], np.asarray(Image.open(io.BytesIO(raw))))
    again = load_cifar10(split, "subset", progress=False)
    assert np.array_equal(again[0], images) and np.array_equal(again[1], labels)


def test_subset_size():
    assert subset_path().stat().st_size <= 5 * 2**20


def test_zip_source_cached(tmp_path, monkeypatch, subset):
    root = tmp_path / "data"
    root.mkdir()
    (root / "test.zip").write_bytes(subset_path().read_bytes())  # holds test/ (and train/)
    cache = tmp_path / "cache"
    images, labels = load_cifar10("test", root, cache_dir=cache, progress=False)
    assert np.array_equal(images, subset["test"][0]) and np.array_equal(labels, subset["test"][1])
    assert len(list(cache.glob("cifar10-test-*.npz"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(cifar10_mod, "_decode_zip", no_decoding)
    cached = load_cifar10("test", root, cache_dir=cache, progress=False)
    assert np.array_equal(cached[0], images) and np.array_equal(cached[1], labels)


def test_env_var_and_cache_env(tmp_path, monkeypatch):
    _write_zip(tmp_path / "train.zip", per_class=1)
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    monkeypatch.setenv("NEURO_EMU_CACHE", str(tmp_path / "cache"))
    images, labels = load_cifar10("train", progress=False)
    assert images.shape == (10, 32, 32, 3) and np.array_equal(labels, np.arange(10))
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1


def test_changed_archive_invalidates_cache(tmp_path):
    archive = _write_zip(tmp_path / "train.zip", per_class=1, seed=1)
    cache = tmp_path / "cache"
    first, _ = load_cifar10("train", tmp_path, cache_dir=cache, progress=False)
    _write_zip(archive, per_class=2, seed=2)
    second, labels = load_cifar10("train", tmp_path, cache_dir=cache, progress=False)
    assert second.shape[0] == 20 and np.array_equal(labels, np.repeat(np.arange(10), 2))
    # same size, new content, new mtime: still decoded afresh
    _write_zip(archive, per_class=2, seed=3)
    stat = archive.stat()
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third, _ = load_cifar10("train", tmp_path, cache_dir=cache, progress=False)
    assert not np.array_equal(third, second)


def test_corrupt_cache_rebuilt(tmp_path):
    _write_zip(tmp_path / "train.zip", per_class=1)
    cache = tmp_path / "cache"
    images, labels = load_cifar10("train", tmp_path, cache_dir=cache, progress=False)
    (cache_file,) = cache.glob("*.npz")
    cache_file.write_bytes(cache_file.read_bytes()[:100])
    with pytest.warns(UserWarning, match=cache_file.name):
        rebuilt = load_cifar10("train", tmp_path, cache_dir=cache, progress=False)
    assert np.array_equal(rebuilt[0], images) and np.array_equal(rebuilt[1], labels)
    with np.load(cache_file) as npz:  # written again, whole
        assert np.array_equal(npz["images"], images)


def test_decoding_pool_matches_one_process(tmp_path, monkeypatch):
    archive = _write_zip(tmp_path / "train.zip", per_class=3)
    one = cifar10_mod._decode_zip(archive, "train", progress=False)
    monkeypatch.setattr(cifar10_mod, "_pool_workers", lambda n: 2)
    pooled = cifar10_mod._decode_zip(archive, "train", progress=False)
    assert np.array_equal(one[0], pooled[0]) and np.array_equal(one[1], pooled[1])


def _write_batches(folder, sizes, rng):
    """Pickled batches in the original format; returns the expected HWC images and labels."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, n in sizes.items():
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)  # CHW flattened
        labels = [int(v) for v in rng.integers(0, 10, n)]
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels}, f)
        expected[name] = (data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1), np.array(labels))
    return expected


@pytest.mark.parametrize("subdir", ["", "cifar-10-batches-py"])
def test_python_batches(tmp_path, subdir):
    rng = np.random.default_rng(0)
    sizes = {f"data_batch_{i}": i for i in range(1, 6)} | {"test_batch": 3}
    expected = _write_batches(tmp_path / subdir, sizes, rng)
    images, labels = load_cifar10("test", tmp_path, cache_dir=tmp_path / "cache")
    assert images.dtype == np.uint8 and images.shape == (3, 32, 32, 3)
    assert labels.dtype == np.int64
    assert np.array_equal(images, expected["test_batch"][0])
    assert np.array_equal(labels, expected["test_batch"][1])
    # pixel (row 5, col 7) of channel 1 is element 1 * 1024 + 5 * 32 + 7 of the flat row
    with open(tmp_path / subdir / "test_batch", "rb") as f:
        flat = pickle.load(f, encoding="bytes")[b"data"]
    assert images[2, 5, 7, 1] == flat[2, 1024 + 5 * 32 + 7]
    images, labels = load_cifar10("train", tmp_path)
    names = [f"data_batch_{i}" for i in range(1, 6)]
    assert np.array_equal(images, np.concatenate([expected[k][0] for k in names]))
    assert np.array_equal(labels, np.concatenate([expected[k][1] for k in names]))
    assert not (tmp_path / "cache").exists()  # batches are read directly


def test_python_batches_missing_and_malformed(tmp_path):
    rng = np.random.default_rng(0)
    _write_batches(tmp_path, {"data_batch_1": 2, "data_batch_2": 2, "test_batch": 2}, rng)
    with pytest.raises(DataError, match="missing data_batch_3, data_batch_4, data_batch_5"):
        load_cifar10("train", tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DataError, match=r"test_batch.*expected data uint8 \[n, 3072\]"):
        load_cifar10("test", tmp_path)
    (tmp_path / "test_batch").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="test_batch.*cannot be unpickled"):
        load_cifar10("test", tmp_path)


# -- errors --------------------------------------------------------------------------------------


def test_bad_split():
    with pytest.raises(ValueError, match="split"):
        load_cifar10("val", "subset")


def test_missing_folder_lists_places(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="nope.*is not a folder.*train.zip and test.zip"):
        load_cifar10("train", tmp_path / "nope")
    with pytest.raises(DataError, match="no train.zip and no python batches.*data_batch_1"):
        load_cifar10("train", tmp_path)
    default = tmp_path / "shared" / "cifar10-jpeg"
    monkeypatch.setattr(cifar10_mod, "_REPO_DATA_DIR", default)
    monkeypatch.delenv(DATA_ENV, raising=False)
    with pytest.raises(DataError) as err:
        load_cifar10("train")
    msg = str(err.value)
    assert f"${DATA_ENV} (not set)" in msg and str(default) in msg and "does not exist" in msg
    assert "train.zip and test.zip" in msg and "data_batch_1" in msg and "root='subset'" in msg
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(DATA_ENV, str(empty))
    with pytest.warns(UserWarning, match="holds no CIFAR-10"), pytest.raises(DataError) as err:
        load_cifar10("test")
    assert str(empty) in str(err.value) and str(default) in str(err.value)


def test_not_a_zip(tmp_path):
    (tmp_path / "train.zip").write_text("not a zip")
    with pytest.raises(DataError, match="train.zip.*not a readable zip") as err:
        load_cifar10("train", tmp_path, cache_dir=tmp_path / "cache")
    assert isinstance(err.value.__cause__, zipfile.BadZipFile)


def test_truncated_zip(tmp_path):
    data = subset_path().read_bytes()
    (tmp_path / "test.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="test.zip"):
        load_cifar10("test", tmp_path, cache_dir=tmp_path / "cache")


def test_corrupt_member_data(tmp_path):
    """A zip whose directory is intact but one member's bytes were overwritten (CRC mismatch)."""
    archive = _write_zip(tmp_path / "train.zip", per_class=1)
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("train/cat/0000.jpg")
    raw = bytearray(archive.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start + 100 : start + 110] = b"\0" * 10
    archive.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="train.zip.*'train/cat/0000.jpg'.*cannot be read"):
        load_cifar10("train", tmp_path, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize(
    "bad, match",
    [
        pytest.param(b"\xff\xd8\xff garbage", "not a decodable image", id="garbage"),
        pytest.param(
            _jpeg(np.zeros((32, 32, 3), np.uint8))[:200], "not a decodable image", id="truncated"
        ),
        pytest.param(_jpeg(np.zeros((16, 32, 3), np.uint8)), "is 32x16, expected 32x32", id="size"),
    ],
)
def test_bad_jpeg_member(tmp_path, bad, match):
    member = "train/dog/0001.jpg"
    _write_zip(tmp_path / "train.zip", bad=(member, bad))
    with pytest.raises(DataError, match=f"train.zip.*'{member}'.*{match}"):
        load_cifar10("train", tmp_path, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*.npz"))


def test_wrong_classes(tmp_path):
    _write_zip(tmp_path / "train.zip", per_class=1, drop_class="frog")
    with pytest.raises(DataError, match=r"train.zip.*9 class folders.*missing \['frog'\]"):
        load_cifar10("train", tmp_path, cache_dir=tmp_path / "cache")
    with zipfile.ZipFile(tmp_path / "test.zip", "w") as zf:
        zf.writestr("test/airplane/notes.txt", "x")
    with pytest.raises(DataError, match="test.zip.*'test/airplane/notes.txt'"):
        load_cifar10("test", tmp_path, cache_dir=tmp_path / "cache")


# -- augmentation and normalisation --------------------------------------------------------------


def _images(b=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 32, 32, 3), generator=g, dtype=torch.uint8)


def _draw(b, pad, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2 * pad + 1, (b, 2), generator=g), torch.rand(b, generator=g) < 0.5


def test_augment_identity():
    x = _images()
    offsets = torch.full((5, 2), 4)
    assert torch.equal(augment_batch(x, offsets, torch.zeros(5, dtype=torch.bool), 4), x)


@pytest.mark.parametrize("dy, dx", [(0, 0), (1, 6), (8, 8), (8, 0), (3, 4)])
def test_augment_crop_by_hand(dy, dx):
    x = _images(2)
    padded = np.pad(x.numpy(), ((0, 0), (4, 4), (4, 4), (0, 0)))  # zeros
    expected = torch.from_numpy(padded[:, dy : dy + 32, dx : dx + 32])
    out = augment_batch(x, torch.tensor([[dy, dx]] * 2), torch.zeros(2, dtype=torch.bool), 4)
    assert torch.equal(out, expected)
    flipped = augment_batch(x, torch.tensor([[dy, dx]] * 2), torch.ones(2, dtype=torch.bool), 4)
    assert torch.equal(flipped, torch.flip(expected, dims=[2]))


def test_augment_flip_per_image():
    x = _images(4)
    flips = torch.tensor([True, False, True, False])
    out = augment_batch(x, torch.full((4, 2), 2), flips, 2)
    assert torch.equal(out[flips], torch.flip(x[flips], dims=[2]))
    assert torch.equal(out[~flips], x[~flips])


def test_augment_rejects_bad_draws():
    x = _images(2)
    with pytest.raises(ValueError, match="offsets: expected values in 0..8"):
        augment_batch(x, torch.tensor([[0, 9], [0, 0]]), torch.zeros(2, dtype=torch.bool), 4)
    with pytest.raises(ValueError, match="flips"):
        augment_batch(x, torch.zeros(2, 2, dtype=torch.long), torch.zeros(2), 4)
    with pytest.raises(ValueError, match="offsets"):
        augment_batch(x, torch.zeros(3, 2, dtype=torch.long), torch.zeros(2, dtype=torch.bool), 4)


@pytest.mark.parametrize("channels_last", [False, True])
def test_normalize_by_hand(channels_last):
    x = _images(3)
    out = normalize(x, channels_last)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    expected = (x.permute(0, 3, 1, 2).double() / 255 - mean.double()) / std.double()
    assert out.dtype == torch.float32 and out.shape == (3, 3, 32, 32)
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-6)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert out.is_contiguous(memory_format=fmt)
    with pytest.raises(ValueError, match="images_u8_nhwc"):
        normalize(x[..., :2])


# -- loader --------------------------------------------------------------------------------------


def _epoch(loader, epoch):
    loader.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in loader]


def _same(a, b):
    return len(a) == len(b) and all(
        torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b, strict=True)
    )


def test_loader_deterministic_per_epoch():
    images = _images(70).numpy()
    labels = np.arange(70)
    a, b = (BatchLoader(images, labels, 16, train=True, seed=7) for _ in range(2))
    assert len(a) == 4  # 70 // 16, last partial batch dropped
    first = [_epoch(a, e) for e in range(3)]
    assert _same(first[2], _epoch(b, 2))  # resuming at epoch 2 without epochs 0, 1
    assert _same(first[2], _epoch(a, 2))
    assert not _same(first[1], first[2])
    assert not _same(_epoch(BatchLoader(images, labels, 16, train=True, seed=8), 2), first[2])
    for x, y in first[0]:
        assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_loader_batches_are_augmented_images():
    """Each yielded image is the normalised crop/flip of the image its label names."""
    images = _images(20)
    loader = BatchLoader(images, torch.arange(20), 8, train=True, pad=2, drop_last=False)
    loader.set_epoch(1)
    crops = {}
    for dy in range(5):
        for dx in range(5):
            for flip in (False, True):
                draw = torch.tensor([[dy, dx]] * 20), torch.full((20,), flip)
                crops[(dy, dx, flip)] = normalize(augment_batch(images, *draw, 2))
    seen = set()
    for x, y in loader:
        for xi, yi in zip(x, y, strict=True):
            hits = [k for k, c in crops.items() if torch.equal(c[yi], xi)]
            assert hits, f"image {int(yi)} is none of its 50 crops/flips"
            seen.update(hits)
    assert len({k[2] for k in seen}) == 2 and len({k[:2] for k in seen}) > 5


def test_loader_ranks_disjoint():
    n = 103
    images = _images(n)
    shares = []
    for rank in range(2):
        loader = BatchLoader(images, np.arange(n), 17, train=True, rank=rank, world_size=2)
        assert len(loader) == 3  # 51 each
        shares.append(torch.cat([y for _, y in _epoch(loader, 5)]))
    assert len(shares[0]) == len(shares[1]) == 51
    assert not set(shares[0].tolist()) & set(shares[1].tolist())
    assert len(set(torch.cat(shares).tolist())) == n - n % 2


def test_eval_loader_in_order_keeps_last():
    images = _images(10)
    loader = BatchLoader(images, np.arange(10), 4, train=False, channels_last=True)
    assert len(loader) == 3
    batches = _epoch(loader, 0)
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([y for _, y in batches]), torch.arange(10))
    x = torch.cat([x for x, _ in batches])
    assert torch.equal(x, normalize(images))  # no augmentation
    assert batches[0][0].is_contiguous(memory_format=torch.channels_last)
    assert _same(batches, _epoch(loader, 3))  # no shuffle in any epoch


def test_loader_rejects_bad_arguments():
    images = _images(4)
    with pytest.raises(ValueError, match="images"):
        BatchLoader(images.float(), np.arange(4), 2, train=True)
    with pytest.raises(ValueError, match="labels"):
        BatchLoader(images, np.arange(3), 2, train=True)
    with pytest.raises(ValueError, match="rank"):
        BatchLoader(images, np.arange(4), 2, train=True, rank=2, world_size=2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_loader_same_batches_on_cuda():
    images, labels = _images(70), torch.arange(70)
    cpu = BatchLoader(images, labels, 16, train=True, seed=3)
    gpu = BatchLoader(images, labels, 16, train=True, seed=3, device="cuda")
    for (x, y), (u, v) in zip(_epoch(cpu, 4), _epoch(gpu, 4), strict=True):
        assert u.is_cuda and torch.equal(x, u.cpu()) and torch.equal(y, v.cpu())


def test_evenly_spaced_covers_every_class_of_a_sorted_split():
    from neuro_emu.data import evenly_spaced

    labels = np.repeat(np.arange(10), 100)  # sorted by class, as the stored splits are
    images = np.arange(1000)
    picked_images, picked_labels = evenly_spaced(images, labels, 50)
    assert np.array_equal(np.bincount(picked_labels), np.full(10, 5))
    assert np.array_equal(labels[picked_images], picked_labels)
    assert evenly_spaced(images, labels, None)[0] is images
    assert evenly_spaced(images, labels, 5000)[0] is images
