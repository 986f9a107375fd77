"""Classification data: folder layouts, the hold-out split, skipping, errors, the decoded cache,
CIFAR-10 (faked: no downloads), and the device-resident loader's augmentations on tiny images."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from convscope.classify import data as data_mod
from convscope.classify.data import DataError, ImageData, load_data
from convscope.classify.loader import DeviceLoader
from convscope.errors import ConfigError, UserError


def pixel(label: int, index: int) -> tuple[int, int, int]:
    """The colour of image `index` of class `label`: tells, after decoding, which file a pixel came from."""
    return (40 * label + 10, index % 256, 200)


def make_tree(root: Path, counts: dict[str, int], size=(16, 16), ext=".png") -> Path:
    """root/<class>/<nnn><ext>, each image a flat colour from `pixel` (PNG: lossless, exact)."""
    for label, (name, n) in enumerate(sorted(counts.items())):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", size, pixel(label, i)).save(root / name / f"{i:03d}{ext}")
    return root


def colours(d: ImageData) -> list[tuple[int, int, int]]:
    return [tuple(v) for v in d.images[:, :, 0, 0].tolist()]


def one_line_error(excinfo, *words) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and isinstance(excinfo.value, UserError)
    for w in words:
        assert w in msg, msg
    return msg


# ---------------------------------------------------------------------------------------- layouts

def test_class_folders_are_split_stratified_and_deterministic(tmp_path):
    root = make_tree(tmp_path / "d", {"cat": 20, "dog": 10, "eel": 5})
    seen = []
    splits = load_data(str(root), val_split=0.2, seed=1, progress=seen.append)
    assert splits.val_kind == "split:0.2" and splits.source == str(root.resolve())
    tr, va = splits.train, splits.val
    assert tr.classes == va.classes == ["cat", "dog", "eel"]
    assert tr.images.dtype == torch.uint8 and tr.images.shape[1:] == (3, 16, 16)
    assert tr.labels.dtype == torch.int64
    # Stratified: round(0.2 n) of every class held out.
    assert torch.bincount(va.labels).tolist() == [4, 2, 1]
    assert torch.bincount(tr.labels).tolist() == [16, 8, 4]
    # Disjoint, together all files; pixels, labels and paths agree.
    assert not set(tr.paths) & set(va.paths) and len(set(tr.paths) | set(va.paths)) == 35
    for d in (tr, va):
        for path, label, rgb in zip(d.paths, d.labels.tolist(), colours(d)):
            assert Path(path).parent.name == d.classes[label]
            assert rgb == pixel(label, int(Path(path).stem))
    # Same seed, same split; another seed, another split.
    again = load_data(str(root), val_split=0.2, seed=1)
    assert again.val.paths == va.paths and torch.equal(again.train.images, tr.images)
    other = load_data(str(root), val_split=0.2, seed=2)
    assert other.val.paths != va.paths
    assert seen[-1].done == seen[-1].total == 35 and seen[-1].what == "images"
    # Rounded to nearest (0.3 * 5 = 1.5 -> 2), at least 1 held out, at least 1 kept.
    assert torch.bincount(load_data(str(root), val_split=0.3).val.labels).tolist() == [6, 3, 2]
    tiny = make_tree(tmp_path / "t", {"a": 2, "b": 3})
    assert torch.bincount(load_data(str(tiny), val_split=0.1).val.labels).tolist() == [1, 1]
    assert torch.bincount(load_data(str(tiny), val_split=0.5).train.labels).tolist() == [1, 1]


def test_train_and_test_folders(tmp_path):
    make_tree(tmp_path / "train", {"a": 3, "b": 4})
    make_tree(tmp_path / "test", {"a": 2, "b": 1})
    s = load_data(str(tmp_path))
    assert s.val_kind == "test" and len(s.train) == 7 and len(s.val) == 3
    assert torch.bincount(s.val.labels).tolist() == [2, 1]
    assert all("/test/" in p for p in s.val.paths)
    make_tree(tmp_path / "val", {"a": 1, "b": 1})  # val/ wins over test/
    s = load_data(str(tmp_path))
    assert s.val_kind == "val" and len(s.val) == 2


def test_train_alone_is_split(tmp_path):
    make_tree(tmp_path / "train", {"a": 10, "b": 10})
    s = load_data(str(tmp_path), val_split=0.5)
    assert s.val_kind == "split:0.5" and len(s.train) == len(s.val) == 10


def test_files_found_recursively_sorted_any_case_hidden_ignored(tmp_path):
    root = make_tree(tmp_path, {"a": 2, "b": 2})
    (root / "a" / "deep" / "er").mkdir(parents=True)
    Image.new("RGB", (16, 16), (1, 2, 3)).save(root / "a" / "deep" / "er" / "X.JPG", quality=100)
    Image.new("RGB", (16, 16), (1, 2, 3)).save(root / "a" / "UP.Png")
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "a" / "._000.png").write_bytes(b"AppleDouble junk")
    (root / ".ipynb_checkpoints").mkdir()  # not a class
    Image.new("RGB", (16, 16)).save(root / ".ipynb_checkpoints" / "x.png")
    s = load_data(str(root), val_split=0.5, seed=0)
    assert s.train.classes == ["a", "b"]
    names = sorted(Path(p).relative_to(root).as_posix() for p in s.train.paths + s.val.paths)
    assert names == ["a/000.png", "a/001.png", "a/UP.Png", "a/deep/er/X.JPG", "b/000.png", "b/001.png"]
    assert s.train.skipped == []


def test_corrupt_files_are_skipped_and_listed(tmp_path):
    root = make_tree(tmp_path, {"a": 4, "b": 4})
    (root / "a" / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "b" / "empty.png").write_bytes(b"")
    good = (root / "b" / "000.png").read_bytes()
    (root / "b" / "cut.png").write_bytes(good[: len(good) // 2])
    (root / "a" / "gone.jpg").symlink_to(tmp_path / "moved-away.jpg")  # (left out without a word)
    os.mkfifo(root / "b" / "pipe.png")  # not a file: left out (reading it would wait forever)
    s = load_data(str(root), val_split=0.25)
    assert len(s.train) + len(s.val) == 8
    assert len(s.train.skipped) == 4 and s.val.skipped == []
    for name in ("bad.jpg", "empty.png", "cut.png", "gone.jpg"):
        assert sum(name in m for m in s.train.skipped) == 1
    assert all("\n" not in m for m in s.train.skipped)


def test_resize_short_side_then_centre_crop(tmp_path):
    # 96x16: red | green | blue thirds; the centre 16x16 (x 40..56) lies 8 px inside the green one, more
    # than the reach of the 2x LANCZOS kernel (6 px), so the 8x8 result is pure green.
    img = np.zeros((16, 96, 3), np.uint8)
    img[:, :32, 0] = img[:, 32:64, 1] = img[:, 64:, 2] = 255
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(2):
            Image.fromarray(img).save(tmp_path / c / f"{i}.png")
    Image.new("RGB", (5, 7), (0, 255, 0)).save(tmp_path / "a" / "small.png")  # enlarged, other sizes fine
    s = load_data(str(tmp_path), size=8, val_split=0.5)
    x = torch.cat([s.train.images, s.val.images])
    assert x.shape == (5, 3, 8, 8)
    assert (x[:, 1] >= 250).all() and (x[:, 0] <= 5).all() and (x[:, 2] <= 5).all()


def test_size_none_keeps_a_common_size_and_refuses_mixed_sizes(tmp_path):
    root = make_tree(tmp_path, {"a": 2, "b": 2}, size=(12, 10))  # 12 wide, 10 high: kept as is
    s = load_data(str(root), val_split=0.5)
    assert s.train.images.shape[2:] == (10, 12)
    Image.new("RGB", (16, 16)).save(root / "b" / "other.png")
    with pytest.raises(DataError) as e:
        load_data(str(root), val_split=0.5)
    one_line_error(e, "other.png", "16x16", "12x10", "--input-size")
    assert load_data(str(root), size=8, val_split=0.5).train.images.shape[2:] == (8, 8)


# ---------------------------------------------------------------------------------------- errors

def test_error_missing_folder_and_file(tmp_path):
    with pytest.raises(DataError) as e:
        load_data(str(tmp_path / "nope"))
    one_line_error(e, "not found", "nope")
    f = tmp_path / "f.png"
    Image.new("RGB", (4, 4)).save(f)
    with pytest.raises(DataError) as e:
        load_data(str(f))
    one_line_error(e, "is a file")


def test_error_no_class_subfolders(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "loose.png")
    with pytest.raises(DataError) as e:
        load_data(str(tmp_path))
    one_line_error(e, "no class sub-folders", "directly")


def test_error_single_class(tmp_path):
    make_tree(tmp_path, {"only": 3})
    with pytest.raises(DataError) as e:
        load_data(str(tmp_path))
    one_line_error(e, "only one class", "'only'")


def test_error_class_without_images(tmp_path):
    make_tree(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "readme.txt").write_text("x")
    with pytest.raises(DataError) as e:
        load_data(str(tmp_path))
    one_line_error(e, "'c'", "no image files")


def test_error_class_without_readable_images(tmp_path):
    make_tree(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "c").mkdir()
    for i in range(2):
        (tmp_path / "c" / f"{i}.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError) as e:
        load_data(str(tmp_path))
    one_line_error(e, "'c'", "no readable image", "2 unreadable")


def test_error_no_images_at_all(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
    with pytest.raises(DataError) as e:
        load_data(str(tmp_path))
    one_line_error(e, "no image files")


def test_error_class_too_small_to_split(tmp_path):
    make_tree(tmp_path, {"a": 3, "b": 1})
    with pytest.raises(DataError) as e:
        load_data(str(tmp_path))
    one_line_error(e, "'b'", "at least 2")
    # After decoding too: 2 files, one of them corrupt.
    (tmp_path / "b" / "x.png").write_bytes(b"junk")
    with pytest.raises(DataError) as e:
        load_data(str(tmp_path))
    one_line_error(e, "'b'", "only one readable")


def test_error_val_classes_do_not_match(tmp_path):
    make_tree(tmp_path / "train", {"cat": 2, "dog": 2, "eel": 2})
    make_tree(tmp_path / "test", {"cat": 1, "fox": 1})
    with pytest.raises(DataError) as e:
        load_data(str(tmp_path))
    one_line_error(e, "missing dog, eel", "not in train: fox")


@pytest.mark.parametrize("bad", [0, 0.0, 0.51, 1, -0.1, float("nan"), True, "0.1"])
def test_error_val_split_out_of_range(tmp_path, bad):
    make_tree(tmp_path, {"a": 2, "b": 2})
    with pytest.raises(ConfigError) as e:
        load_data(str(tmp_path), val_split=bad)
    one_line_error(e, "--val-split")


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_error_bad_size(tmp_path, bad):
    with pytest.raises(ConfigError) as e:
        load_data(str(tmp_path), size=bad)
    one_line_error(e, "--input-size")


def test_error_memory_estimate(tmp_path, monkeypatch):
    make_tree(tmp_path, {"a": 2, "b": 2})
    calls = []
    monkeypatch.setattr(data_mod, "load_image", lambda p, *a: calls.append(p))
    with pytest.raises(DataError) as e:
        load_data(str(tmp_path), size=40_000)  # 4 * 3 * 40000^2 bytes = 19 GB
    one_line_error(e, "19.2 GB", "smaller --input-size")
    monkeypatch.setattr(data_mod, "MAX_DATA_BYTES", 4 * 3 * 16 * 16 - 1)
    with pytest.raises(DataError):
        load_data(str(tmp_path))  # size from the first image: 16 px
    assert calls == []  # refused before decoding anything


# ----------------------------------------------------------------------------------------- cache

def test_cache_hit_equal_and_invalidated_by_a_changed_file(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "d", {"a": 3, "b": 3})
    cache = tmp_path / "cache"
    first = load_data(str(root), cache_dir=str(cache), val_split=0.34)
    assert len(list(cache.glob("*.pt"))) == 1 and not list(cache.glob(".*"))  # no temp files left

    real = data_mod.load_image
    calls = []
    monkeypatch.setattr(data_mod, "load_image", lambda p, *a: calls.append(p) or real(p, *a))
    seen = []
    hit = load_data(str(root), cache_dir=str(cache), val_split=0.34, progress=seen.append)
    assert calls == [] and seen and all(p.cached for p in seen)
    for a, b in ((first.train, hit.train), (first.val, hit.val)):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
        assert a.paths == b.paths and a.classes == b.classes

    # Rewrite one file (new pixels; the mtime pushed forward in case the clock is coarse).
    f = root / "b" / "001.png"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(f)
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    changed = load_data(str(root), cache_dir=str(cache), val_split=0.34)
    assert len(calls) == 6
    everything = torch.cat([changed.train.images, changed.val.images])
    assert (everything[:, :, 0, 0] == torch.tensor([1, 2, 3], dtype=torch.uint8)).all(1).sum() == 1
    assert len(list(cache.glob("*.pt"))) == 1  # the stale entry was replaced, not kept beside

    # A damaged cache file is a miss, rebuilt, never an error.
    (entry,) = cache.glob("*.pt")
    entry.write_bytes(b"truncated")
    again = load_data(str(root), cache_dir=str(cache), val_split=0.34)
    assert len(calls) == 12 and torch.equal(again.train.images, changed.train.images)
    assert torch.load(entry, weights_only=True)["images"].dtype == torch.uint8


def test_cache_key_includes_size(tmp_path):
    root = make_tree(tmp_path / "d", {"a": 2, "b": 2})
    cache = tmp_path / "cache"
    assert load_data(str(root), cache_dir=str(cache), size=8).train.images.shape[2:] == (8, 8)
    assert load_data(str(root), cache_dir=str(cache), size=12).train.images.shape[2:] == (12, 12)
    assert load_data(str(root), cache_dir=str(cache), size=8).train.images.shape[2:] == (8, 8)


def test_unwritable_cache_warns_and_continues(tmp_path):
    root = make_tree(tmp_path / "d", {"a": 2, "b": 2})
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = load_data(str(root), cache_dir=str(blocker / "cache"))
    assert len(s.train) + len(s.val) == 4
    assert any("cache" in str(w.message) for w in caught)


# -------------------------------------------------------------------------------------- CIFAR-10

def fake_cifar(n_train=20, n_test=10):
    def make(root, train, report):
        n = n_train if train else n_test
        rng = np.random.default_rng(int(train))
        return SimpleNamespace(data=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                               targets=[i % 10 for i in range(n)], classes=list(data_mod.CIFAR10_CLASSES))
    return make


def test_cifar10_from_torchvision_layout(tmp_path, monkeypatch):
    from convscope.classify import cifar10 as cifar_mod

    monkeypatch.setattr(cifar_mod, "_cifar10_dataset", fake_cifar())
    s = load_data("cifar10", root=str(tmp_path))
    assert s.source == "cifar10" and s.val_kind == "test"
    assert s.train.images.shape == (20, 3, 32, 32) and s.val.images.shape == (10, 3, 32, 32)
    assert s.train.paths is None and s.train.classes[0] == "airplane" and s.train.classes[9] == "truck"
    raw = fake_cifar()(None, True, None).data
    assert torch.equal(s.train.images, torch.from_numpy(raw).permute(0, 3, 1, 2))
    cache = tmp_path / "cache"
    big = load_data("cifar10", root=str(tmp_path), size=40, cache_dir=str(cache))
    assert big.train.images.shape == (20, 3, 40, 40) and len(list(cache.glob("*.pt"))) == 2
    assert torch.equal(load_data("cifar10", root=str(tmp_path), size=40, cache_dir=str(cache)).val.images,
                       big.val.images)


def test_cifar10_offline_is_one_clear_line(tmp_path, monkeypatch):
    import torchvision.datasets
    from urllib.error import URLError

    class Offline:
        def __init__(self, root, train=True, download=False):
            if download:  # as torchvision does: the folder made, a part of the archive written, then the error
                Path(root).mkdir(parents=True, exist_ok=True)
                (Path(root) / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b partial")
                raise URLError("[Errno -3] Temporary failure in name resolution")
            raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", Offline)
    seen = []
    with pytest.raises(DataError) as e:
        load_data("cifar10", root=str(tmp_path / "c10"), progress=seen.append)
    one_line_error(e, "could not download CIFAR-10", "internet connection", "folder")
    assert seen and seen[0].what == "download"
    assert not (tmp_path / "c10").exists()  # the folder the failed download made is gone
    # A --data-root that was there before keeps what it held; only the partial archive goes.
    kept = tmp_path / "mine"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(DataError):
        load_data("cifar10", root=str(kept))
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]


# ---------------------------------------------------------------------------------------- loader

def synthetic(n=64, h=8, w=8, seed=0) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)
    return ImageData(images, torch.arange(n) % 4, ["a", "b", "c", "d"], None, [])


def epoch(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def test_loader_plain_shapes_dtypes_ranges_and_order():
    d = synthetic(n=50)
    loader = DeviceLoader(d, 16, shuffle=False)
    batches = epoch(loader)
    assert len(loader) == len(batches) == 4 and [len(y) for _, y in batches] == [16, 16, 16, 2]
    x = torch.cat([b[0] for b in batches])
    assert x.dtype == torch.float32 and x.shape == (50, 3, 8, 8) and 0 <= x.min() and x.max() <= 1
    assert torch.equal((x * 255).round().to(torch.uint8), d.images)
    assert torch.equal(torch.cat([b[1] for b in batches]), d.labels)
    assert len(DeviceLoader(d, 16, drop_last=True)) == 3


def test_loader_shuffle_is_a_permutation_and_options_apply():
    d = synthetic(n=40)
    loader = DeviceLoader(d, 8, shuffle=True, flip=True, translate=2, cutout=3, dtype=torch.bfloat16,
                          channels_last=True)
    seen = []
    for x, y in loader:
        assert x.dtype == torch.bfloat16 and x.is_contiguous(memory_format=torch.channels_last)
        assert x.shape == (8, 3, 8, 8) and y.dtype == torch.int64 and 0 <= x.min() and x.max() <= 1
        seen.append(y)
    labels = torch.cat(seen)
    assert torch.equal(torch.bincount(labels), torch.bincount(d.labels))
    assert not torch.equal(labels, d.labels)  # shuffled (40 images: a fixed order is ~impossible)
    plan = DeviceLoader(d, 8, shuffle=True, seed=5)._plan(0)
    assert torch.equal(plan.order.sort().values, torch.arange(40))


def test_flip_flips_about_half():
    n = 2000
    images = torch.zeros(n, 3, 4, 6, dtype=torch.uint8)
    images[..., :3] = 255  # bright left half: a flipped image is bright on the right
    d = ImageData(images, torch.zeros(n, dtype=torch.int64), ["a", "b"], None, [])
    x = torch.cat([b for b, _ in DeviceLoader(d, 512, flip=True, seed=3)])
    left = x[..., :3].mean((1, 2, 3))
    assert set(left.tolist()) <= {0.0, 1.0}  # every image is either as it was or mirrored
    flipped = (left == 0).float().mean().item()
    assert 0.45 < flipped < 0.55  # binomial(2000, 0.5): 5 sigma is 0.056
    assert (torch.cat([b for b, _ in DeviceLoader(d, 512, flip=False)])[..., :3] == 1).all()


def test_alternate_flip_mirrors_each_image_every_other_epoch():
    n = 400
    images = torch.zeros(n, 3, 4, 6, dtype=torch.uint8)
    images[..., :3] = 255
    d = ImageData(images, torch.arange(n), [str(i) for i in range(n)], None, [])

    def flipped_per_image(loader):  # epoch by epoch: bool [n], indexed by image (label)
        state = torch.zeros(n, dtype=torch.bool)
        for x, y in loader:
            state[y] = x[..., :3].mean((1, 2, 3)) == 0
        return state

    loader = DeviceLoader(d, 64, flip=True, alternate_flip=True, seed=7)
    e0, e1, e2 = (flipped_per_image(loader) for _ in range(3))
    assert 0.4 < e0.float().mean() < 0.6
    assert torch.equal(e1, ~e0) and torch.equal(e2, e0)
    loader.set_epoch(1)  # a resumed run sees the same flips
    assert torch.equal(flipped_per_image(loader), e1)
    plain = DeviceLoader(d, 64, flip=True, seed=7)
    p0, p1 = flipped_per_image(plain), flipped_per_image(plain)
    assert not torch.equal(p1, ~p0)  # random flips: about half the images repeat their view


@pytest.mark.parametrize("pad_mode", ["reflect", "zeros"])
def test_translate_moves_a_bright_pixel_by_at_most_translate(pad_mode):
    n, t = 400, 3
    images = torch.zeros(n, 3, 16, 16, dtype=torch.uint8)
    images[:, :, 7, 9] = 255
    d = ImageData(images, torch.zeros(n, dtype=torch.int64), ["a", "b"], None, [])
    x = torch.cat([b for b, _ in DeviceLoader(d, 128, shuffle=False, translate=t, pad_mode=pad_mode)])
    bright = (x[:, 0] == 1).nonzero()  # (image, row, col)
    assert len(bright) == n and torch.equal(bright[:, 0], torch.arange(n))  # one per image, none lost
    dy, dx = bright[:, 1] - 7, bright[:, 2] - 9
    assert dy.abs().max() == t and dx.abs().max() == t  # all shifts up to t occur...
    assert (dy.abs() <= t).all() and (dx.abs() <= t).all()  # ...and never more
    assert len(set(zip(dy.tolist(), dx.tolist()))) == (2 * t + 1) ** 2
    assert (x[:, 0].sum((1, 2)) == 1).all() and torch.equal(x[:, 0], x[:, 2])


@pytest.mark.parametrize("pad_mode", ["reflect", "zeros"])
def test_translate_and_flip_equal_pad_then_crop(pad_mode):
    d, t = synthetic(n=30, h=8, w=10), 4
    loader = DeviceLoader(d, 30, shuffle=True, flip=True, translate=t, pad_mode=pad_mode, seed=7)
    plan = loader._plan(0)
    (x, _), = list(loader)
    mode = "reflect" if pad_mode == "reflect" else "constant"
    for k in range(30):
        img = d.images[plan.order[k]].float()
        if plan.flip[k]:
            img = img.flip(2)
        padded = F.pad(img[None], (t, t, t, t), mode=mode)[0]
        dy, dx = plan.shift[:, k].tolist()
        want = padded[:, t + dy:t + dy + 8, t + dx:t + dx + 10]
        assert torch.equal((x[k] * 255).round(), want)


def test_cutout_fills_one_square_of_the_right_side_with_the_mean_colour():
    n, k = 64, 5
    images = torch.zeros((n, 3, 12, 12), dtype=torch.uint8)
    images[::2] = 255
    images[:, 2] = 40  # channel means 127.5, 127.5, 40 -> fill (128, 128, 40)
    d = ImageData(images, torch.zeros(n, dtype=torch.int64), ["a", "b"], None, [])
    x = torch.cat([b for b, _ in DeviceLoader(d, 32, cutout=k, shuffle=False, seed=1)])
    fill = torch.tensor([128, 128, 40]) / 255
    changed = (x != images / 255).any(1)  # [N, H, W]: pixels cutout replaced
    corners = set()
    for i, z in enumerate(changed):
        ys, xs = z.nonzero(as_tuple=True)
        assert len(ys) == k * k and ys.max() - ys.min() == k - 1 and xs.max() - xs.min() == k - 1
        square = x[i][:, ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        assert torch.allclose(square, fill.view(3, 1, 1).expand_as(square))
        corners.add((ys.min().item(), xs.min().item()))
    assert len(corners) > 20  # random places, not one


def test_determinism_seeds_and_set_epoch():
    d = synthetic(n=50)
    kw = dict(flip=True, translate=2, cutout=3, seed=11)
    a, b = DeviceLoader(d, 16, **kw), DeviceLoader(d, 16, **kw)
    ea0, ea1 = epoch(a), epoch(a)  # epochs 0 and 1 in turn
    eb0 = epoch(b)
    same = lambda p, q: all(torch.equal(u[0], v[0]) and torch.equal(u[1], v[1]) for u, v in zip(p, q))
    assert same(ea0, eb0) and not same(ea0, ea1)
    b.set_epoch(1)
    assert same(epoch(b), ea1)
    b.set_epoch(0)
    assert same(epoch(b), ea0)
    assert not same(epoch(DeviceLoader(d, 16, **{**kw, "seed": 12})), ea0)
    c = DeviceLoader(d, 16, **{**kw, "seed": 10})
    c.set_epoch(1)
    assert same(epoch(c), ea0)  # epoch e draws from seed + e


def test_start_batch_is_the_tail_of_a_full_epoch():
    d = synthetic(n=70)
    kw = dict(flip=True, translate=1, cutout=2, seed=4)
    full = DeviceLoader(d, 16, **kw)
    full.set_epoch(3)
    whole = epoch(full)
    resumed = DeviceLoader(d, 16, **kw)
    resumed.set_epoch(3, start_batch=2)
    tail = epoch(resumed)
    assert len(tail) == len(whole) - 2 == 3
    assert all(torch.equal(u[0], v[0]) and torch.equal(u[1], v[1]) for u, v in zip(tail, whole[2:]))
    # The epoch after a resumed one is a full one again; start_batch in the constructor works too.
    assert len(epoch(resumed)) == len(resumed) == 5
    ctor = DeviceLoader(d, 16, start_batch=4, **kw)
    assert len(epoch(ctor)) == 1


@pytest.mark.parametrize("kw", [dict(batch_size=0), dict(translate=8), dict(cutout=9), dict(pad_mode="wrap"),
                                dict(dtype=torch.int32), dict(batch_size=65, drop_last=True),
                                dict(start_batch=-1), dict(translate=1.5)])
def test_loader_bad_arguments(kw):
    args = {"batch_size": 8, **kw}
    with pytest.raises(UserError) as e:
        DeviceLoader(synthetic(n=64), args.pop("batch_size"), **args)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kwargs, word", [
    (dict(cache_dir=3), "cache_dir"),               # was TypeError: expected str, bytes or os.PathLike
    (dict(progress=3), "progress"),                 # was TypeError: 'int' object is not callable
    (dict(seed=-3), "--seed"),                      # was taken, where TrainConfig refuses it
    (dict(seed=10**23), "--seed"),                  # was ValueError: Overflow when unpacking long long
])
def test_load_data_refuses_arguments_of_the_wrong_kind(tmp_path, kwargs, word):
    make_tree(tmp_path / "d", {"a": 2, "b": 2})
    with pytest.raises(ConfigError) as e:
        load_data(str(tmp_path / "d"), size=8, **kwargs)
    one_line_error(e, word)
    with pytest.raises(ConfigError, match="root"):
        load_data("cifar10", root=3)                # was TypeError


@pytest.mark.parametrize("classes", [None, "cat", [], ["cat", 1]])
def test_load_images_takes_a_list_of_class_names(tmp_path, classes):
    """None was a TypeError; "cat" was taken as the classes c, a, t."""
    from convscope.classify.data import load_images

    (tmp_path / "cat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "cat" / "0.png")
    with pytest.raises(ConfigError, match="classes must be the run's list of class names"):
        load_images(str(tmp_path), classes=classes, size=8, cache_dir=str(tmp_path / "c"))


def test_predict_feeds_the_net_the_pixels_training_decoded(tmp_path):
    # predict resampled with bicubic where the training decoder uses Lanczos to shrink (and placed
    # its crop on a rounded grid), so a photo reached the net differently than it did in training.
    from convscope.classify.predict import predict_images
    from convscope.classify.data import load_images

    rng = np.random.default_rng(0)
    (tmp_path / "a").mkdir()
    Image.fromarray(rng.integers(0, 256, (61, 97, 3), dtype=np.uint8)).save(tmp_path / "a" / "x.png")
    decoded = load_images(str(tmp_path), classes=["a"], size=24).images[0]

    seen = []

    class Record(torch.nn.Module):
        def forward(self, x):
            seen.append(x)
            return torch.zeros(x.shape[0], 1)

    predict_images(Record(), ["a"], [tmp_path / "a" / "x.png"], 24, "cpu")
    fed = (seen[0][0] * 255).round().to(torch.uint8)
    assert torch.equal(fed, decoded)


def test_a_run_folder_is_refused_only_where_the_data_is_read(tmp_path):
    from convscope.classify.folders import run_outside_data

    flat = make_tree(tmp_path / "flat", {"a": 2, "b": 2})
    with pytest.raises(ConfigError, match="inside --data"):
        run_outside_data(flat / "run", str(flat))
    run_outside_data(flat / ".runs" / "r1", str(flat))          # hidden: never read as a class
    run_outside_data(tmp_path / "elsewhere", str(flat))
    split = tmp_path / "split"
    make_tree(split / "train", {"a": 2, "b": 2})
    make_tree(split / "test", {"a": 1, "b": 1})
    run_outside_data(split / "runs" / "r1", str(split))          # beside train/ and test/: never read
    with pytest.raises(ConfigError, match="inside --data"):
        run_outside_data(split / "train" / "r1", str(split))
