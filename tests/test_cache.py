"""The preprocessing cache: sizes, exactness, reuse, invalidation, atomic writes, stopping."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import torchvision.transforms.v2.functional as TF
from conftest import make_image, write_covidx

import fedlib.data.cache as cache
from fedlib.data import (
    CLASSES,
    Layout,
    cache_size,
    decode_split,
    load_image,
    load_split_arrays,
    preprocess,
)
from fedlib.errors import UserError


def npy_files(folder):
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".npy")


def test_cache_size_keeps_the_papers_256_to_224_ratio():
    assert cache_size(224) == 256
    assert cache_size(64) == 73
    assert cache_size(32) == 37


@pytest.mark.parametrize("bad", [0, -3, 2.5, "224", True])
def test_cache_size_rejects_non_positive_integers(bad):
    with pytest.raises(UserError, match="image_size must be a positive integer"):
        cache_size(bad)


@pytest.mark.parametrize("size", [(40, 30), (30, 40), (33, 33), (401, 200)])
def test_preprocess_matches_torchvision_resize_and_centre_crop(size):
    img = make_image("RGB", size, seed=5)
    expected = np.asarray(TF.center_crop(TF.resize(img, 20), [20, 20]))

    out = preprocess(img, 20)

    assert out.dtype == np.uint8 and out.shape == (20, 20, 3)
    np.testing.assert_array_equal(out, expected)


def test_preprocess_grayscale_equals_its_rgb_form():
    gray = make_image("L", (40, 30), seed=6)

    np.testing.assert_array_equal(preprocess(gray, 21), preprocess(gray.convert("RGB"), 21))


def test_preprocess_upscales_small_images():
    out = preprocess(make_image("L", (10, 8)), 16)

    assert out.shape == (16, 16, 3)


def test_decode_split_decodes_every_listed_image(covidx_root):
    images, labels, records = decode_split(covidx_root, "train", image_size=28)

    assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 2, 1, 2]
    np.testing.assert_array_equal(images[1], preprocess(load_image(covidx_root / "train" / records[1].filename), 32))


def test_cache_equals_direct_decoding(covidx_root, tmp_path):
    expected_images, expected_labels, expected_records = decode_split(covidx_root, "train", 28)

    images, labels, records = load_split_arrays(covidx_root, "train", 28, cache_dir=tmp_path / "c", progress=False)

    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)
    assert records == expected_records


def test_cache_is_a_read_only_memmap(covidx_root, tmp_path):
    images, _, _ = load_split_arrays(covidx_root, "test", 28, cache_dir=tmp_path / "c", progress=False)

    assert isinstance(images, np.memmap)
    assert not images.flags.writeable
    with pytest.raises(ValueError):
        images[0, 0, 0, 0] = 1


def test_second_load_reuses_the_cache(covidx_root, tmp_path, monkeypatch):
    cache_dir = tmp_path / "c"
    first, _, _ = load_split_arrays(covidx_root, "train", 28, cache_dir=cache_dir, progress=False)
    (name,) = npy_files(cache_dir)
    mtime = (cache_dir / name).stat().st_mtime_ns

    def no_decoding(path):
        raise AssertionError(f"decoded {path} although the cache exists")

    monkeypatch.setattr(cache, "_decode", no_decoding)
    second, _, _ = load_split_arrays(covidx_root, "train", 28, cache_dir=cache_dir, progress=False)

    np.testing.assert_array_equal(second, first)
    assert npy_files(cache_dir) == [name]
    assert (cache_dir / name).stat().st_mtime_ns == mtime


def test_editing_the_split_file_rebuilds(covidx_root, tmp_path):
    cache_dir = tmp_path / "c"
    load_split_arrays(covidx_root, "train", 28, cache_dir=cache_dir, progress=False)
    split = covidx_root / "train_split.txt"
    split.write_text("".join(split.read_text().splitlines(keepends=True)[:3]))

    images, labels, _ = load_split_arrays(covidx_root, "train", 28, cache_dir=cache_dir, progress=False)

    assert images.shape[0] == 3 and labels.tolist() == [0, 1, 2]
    assert len(npy_files(cache_dir)) == 2


def test_changing_the_image_size_rebuilds(covidx_root, tmp_path):
    cache_dir = tmp_path / "c"
    load_split_arrays(covidx_root, "train", 28, cache_dir=cache_dir, progress=False)

    images, _, _ = load_split_arrays(covidx_root, "train", 14, cache_dir=cache_dir, progress=False)

    assert images.shape == (5, 16, 16, 3)
    assert len(npy_files(cache_dir)) == 2


def test_splits_get_separate_caches(covidx_root, tmp_path):
    cache_dir = tmp_path / "c"

    train, _, _ = load_split_arrays(covidx_root, "train", 28, cache_dir=cache_dir, progress=False)
    test, _, _ = load_split_arrays(covidx_root, "test", 28, cache_dir=cache_dir, progress=False)

    assert (train.shape[0], test.shape[0]) == (5, 3)
    assert len(npy_files(cache_dir)) == 2


def test_a_failed_build_leaves_nothing_behind(covidx_root, tmp_path):
    cache_dir = tmp_path / "c"
    (covidx_root / "train" / "d.png").write_bytes(b"\x89PNG broken")

    with pytest.raises(UserError, match=r"d\.png cannot be decoded"):
        load_split_arrays(covidx_root, "train", 28, cache_dir=cache_dir, progress=False)

    assert list(cache_dir.iterdir()) == []


def test_a_corrupt_cache_file_is_rebuilt(covidx_root, tmp_path):
    cache_dir = tmp_path / "c"
    expected, _, _ = decode_split(covidx_root, "test", 28)
    load_split_arrays(covidx_root, "test", 28, cache_dir=cache_dir, progress=False)
    (name,) = npy_files(cache_dir)
    (cache_dir / name).write_bytes(b"garbage")

    images, _, _ = load_split_arrays(covidx_root, "test", 28, cache_dir=cache_dir, progress=False)

    np.testing.assert_array_equal(images, expected)


def test_default_cache_dir_sits_beside_the_data(covidx_root):
    load_split_arrays(covidx_root, "test", 28, progress=False)

    assert len(npy_files(covidx_root / ".fedlib_cache")) == 1


def test_default_cache_dir_falls_back_to_home(covidx_root, tmp_path, monkeypatch):
    (covidx_root / ".fedlib_cache").write_text("a file, so no folder can be made here")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    load_split_arrays(covidx_root, "test", 28, progress=False)

    assert len(npy_files(tmp_path / "home" / ".cache" / "fedlib")) == 1


def test_progress_bar_can_be_silenced(covidx_root, tmp_path, capsys):
    load_split_arrays(covidx_root, "test", 28, cache_dir=tmp_path / "quiet", progress=False)
    quiet = capsys.readouterr().err
    load_split_arrays(covidx_root, "test", 28, cache_dir=tmp_path / "loud", progress=True)
    loud = capsys.readouterr().err

    assert quiet == ""
    assert "caching test at 32px" in loud


def test_custom_layout_reaches_the_cache(covidx_root, tmp_path):
    (covidx_root / "train").rename(covidx_root / "images")
    layout = Layout(train_dir="images")

    images, _, _ = load_split_arrays(covidx_root, "train", 28, layout, cache_dir=tmp_path / "c", progress=False)

    assert images.shape == (5, 32, 32, 3)


# --- stopping a build -----------------------------------------------------------

# Builds the train cache of argv[1] into argv[2]. With FEDLIB_TEST_SLOW set, every
# image takes 50 ms more and the first one touches that file. The patch sits at the
# top level because the decode workers import this script too (as any spawned
# process imports its parent's main script) and so get it as well.
BUILD_SCRIPT = """
import os, sys, time
from pathlib import Path

import fedlib.data.cache as cache

if os.environ.get("FEDLIB_TEST_SLOW"):
    preprocess = cache.preprocess

    def slow(img, size):
        Path(os.environ["FEDLIB_TEST_SLOW"]).touch()
        time.sleep(0.05)
        return preprocess(img, size)

    cache.preprocess = slow

if __name__ == "__main__":
    try:
        images, _, _ = cache.load_split_arrays(sys.argv[1], "train", 28, cache_dir=sys.argv[2], progress=False)
    except KeyboardInterrupt:
        sys.exit(130)
    print("built", images.shape, flush=True)
"""


def _build_process(script, root, cache_dir, slow=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    if slow is not None:
        env["FEDLIB_TEST_SLOW"] = str(slow)
    # a session of its own: its process group is the build and its workers, as at a terminal
    return subprocess.Popen([sys.executable, str(script), str(root), str(cache_dir)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _group_alive(pgid: int) -> bool:
    """Whether any live process (zombies aside) is left in the process group."""
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return False


def _wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.parametrize(
    "sig, to_group, exit_code",
    [(signal.SIGINT, True, 130), (signal.SIGTERM, False, 143), (signal.SIGTERM, True, 143)],
    ids=["ctrl-c", "sigterm", "sigterm-to-the-group"],
)
def test_a_signal_mid_build_ends_it_at_once_leaving_nothing_and_the_next_build_works(tmp_path, sig, to_group,
                                                                                     exit_code):
    root = write_covidx(tmp_path / "covidx", [(f"p{i}", f"i{i}.png", CLASSES[i % 3]) for i in range(300)],
                        [("q", "t.png", "normal")])
    script, cache_dir, started = tmp_path / "build.py", tmp_path / "cache", tmp_path / "started"
    script.write_text(BUILD_SCRIPT)
    proc = _build_process(script, root, cache_dir, slow=started)  # 300 x 50 ms on at most 16 workers: > 0.9 s
    assert _wait_for(lambda: started.exists() or proc.poll() is not None, 60), "the build never began"
    assert proc.poll() is None, proc.communicate()

    if to_group:  # what Ctrl-C at a terminal does, and `kill -TERM -<pgid>`
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=10)

    assert proc.returncode == exit_code, err
    assert "Traceback" not in err, err  # no worker died noisily either
    assert list(cache_dir.iterdir()) == []  # no .tmp file, no cache file
    assert _wait_for(lambda: not _group_alive(proc.pid), 10), "decode workers outlived the build"

    again = _build_process(script, root, cache_dir)
    out, err = again.communicate(timeout=120)

    assert again.returncode == 0 and out == "built (300, 32, 32, 3)\n", err
    assert [p.suffix for p in cache_dir.iterdir()] == [".npy"]
