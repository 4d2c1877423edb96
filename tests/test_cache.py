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
    expected = np.asarray(TF.center_crop(TF.resize(img.convert("L"), 20), [20, 20]))[:, :, None]

    out = preprocess(img, 20)  # one channel: a colour image's luma

    assert out.dtype == np.uint8 and out.shape == (20, 20, 1)
    np.testing.assert_array_equal(out, expected)


def test_preprocess_grayscale_equals_its_rgb_form():
    gray = make_image("L", (40, 30), seed=6)

    np.testing.assert_array_equal(preprocess(gray, 21), preprocess(gray.convert("RGB"), 21))


def test_preprocess_upscales_small_images():
    out = preprocess(make_image("L", (10, 8)), 16)

    assert out.shape == (16, 16, 1)


def test_decode_split_decodes_every_listed_image(covidx_root):
    images, labels, records = decode_split(covidx_root, "train", image_size=28)

    assert images.shape == (5, 32, 32, 1) and images.dtype == np.uint8
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

    assert images.shape == (5, 16, 16, 1)
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


def test_workers_report_the_first_bad_image_listed_and_leave_nothing(tmp_path):
    rows = [(f"p{i}", f"i{i:02d}.png", CLASSES[i % 3]) for i in range(60)]  # enough for workers
    root = write_covidx(tmp_path / "covidx", rows, [("q", "t.png", "normal")])
    for i in (45, 13, 30):
        (root / "train" / f"i{i:02d}.png").write_bytes(b"\x89PNG broken")
    cache_dir = tmp_path / "c"

    with pytest.raises(UserError, match=r"i13\.png cannot be decoded"):
        load_split_arrays(root, "train", 28, cache_dir=cache_dir, progress=False)

    assert list(cache_dir.iterdir()) == []


def test_workers_write_what_one_process_writes(tmp_path, monkeypatch):
    rows = [
        (f"p{i}", f"i{i:02d}.png", CLASSES[i % 3], "s", ("L", "RGB", "I;16")[i % 3], (40 + i, 30)) for i in range(40)
    ]
    root = write_covidx(tmp_path / "covidx", rows, [("q", "t.png", "normal")])
    parallel, _, _ = load_split_arrays(root, "train", 28, cache_dir=tmp_path / "a", progress=False)
    monkeypatch.setattr(cache, "_PARALLEL_FROM", 10**9)

    serial, _, _ = load_split_arrays(root, "train", 28, cache_dir=tmp_path / "b", progress=False)

    np.testing.assert_array_equal(parallel, serial)
    assert serial[-1].any()


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

    assert images.shape == (5, 32, 32, 1)


# --- stopping a build -----------------------------------------------------------

# Builds the train cache of argv[1] into argv[2] and prints its shape.
BUILD_SCRIPT = """
import signal
import sys

import fedlib.data.cache as cache

if __name__ == "__main__":
    # Python leaves SIGINT ignored when it was ignored at start (a test run in the background
    # of a shell); a terminal's Ctrl-C, which this test plays, reaches a foreground process.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        images, _, _ = cache.load_split_arrays(sys.argv[1], "train", 28, cache_dir=sys.argv[2], progress=False)
    except KeyboardInterrupt:
        sys.exit(130)
    print("built", images.shape, flush=True)
"""

# Python imports sitecustomize at start-up from its path, so with this file's folder on
# PYTHONPATH every process, decode workers included, decodes 50 ms slower per image and
# touches FEDLIB_TEST_SLOW when it begins.
SLOW_DECODING = """
import os

if os.environ.get("FEDLIB_TEST_SLOW"):
    import time
    from pathlib import Path

    import fedlib.data.cache as cache

    preprocess = cache.preprocess

    def slow(img, size):
        Path(os.environ["FEDLIB_TEST_SLOW"]).touch()
        time.sleep(0.05)
        return preprocess(img, size)

    cache.preprocess = slow
"""


def _build_process(tmp_path, root, cache_dir, slow=None):
    (tmp_path / "build.py").write_text(BUILD_SCRIPT)
    (tmp_path / "hooks").mkdir(exist_ok=True)
    (tmp_path / "hooks" / "sitecustomize.py").write_text(SLOW_DECODING)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "hooks"), *sys.path])}
    if slow is not None:
        env["FEDLIB_TEST_SLOW"] = str(slow)
    # a session of its own, so that signalling its process group is Ctrl-C at its own terminal
    return subprocess.Popen(
        [sys.executable, str(tmp_path / "build.py"), str(root), str(cache_dir)],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _alive(pids) -> list[int]:
    """Those of ``pids`` that are still running (zombies count as gone)."""
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


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
def test_a_signal_mid_build_ends_it_at_once_leaving_nothing_and_the_next_build_works(
    tmp_path, sig, to_group, exit_code
):
    root = write_covidx(
        tmp_path / "covidx", [(f"p{i}", f"i{i}.png", CLASSES[i % 3]) for i in range(300)], [("q", "t.png", "normal")]
    )
    cache_dir, started = tmp_path / "cache", tmp_path / "started"
    proc = _build_process(tmp_path, root, cache_dir, slow=started)  # 300 x 50 ms on at most 16 workers: > 0.9 s
    assert _wait_for(lambda: started.exists() or proc.poll() is not None, 60), "the build never began"
    assert proc.poll() is None, proc.communicate()
    workers = [child.pid for child in psutil.Process(proc.pid).children(recursive=True)]
    assert workers or os.cpu_count() == 1

    if to_group:  # what Ctrl-C at a terminal does, and `kill -TERM -<pgid>`
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=10)

    assert proc.returncode == exit_code, err
    assert "Traceback" not in err, err  # no worker died noisily either
    assert list(cache_dir.iterdir()) == []  # no .tmp file, no cache file
    assert _wait_for(lambda: not _alive(workers), 10), "decode workers outlived the build"

    again = _build_process(tmp_path, root, cache_dir)
    out, err = again.communicate(timeout=120)

    assert again.returncode == 0 and out == "built (300, 32, 32, 1)\n", err
    assert [p.suffix for p in cache_dir.iterdir()] == [".npy"]


def test_workers_do_not_import_the_callers_main_script(tmp_path):
    # a script without the `if __name__ == "__main__":` guard, which spawned workers would run again
    root = write_covidx(
        tmp_path / "covidx", [(f"p{i}", f"i{i}.png", CLASSES[i % 3]) for i in range(40)], [("q", "t.png", "normal")]
    )  # enough images for workers
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import sys\nimport fedlib.data.cache as cache\nprint('main ran', flush=True)\n"
        "images, _, _ = cache.load_split_arrays(sys.argv[1], 'train', 28, cache_dir=sys.argv[2], "
        "progress=False)\nprint('built', images.shape)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    res = subprocess.run(
        [sys.executable, str(script), str(root), str(tmp_path / "c")],
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
    )

    assert res.returncode == 0, res.stderr
    assert res.stdout == "main ran\nbuilt (40, 32, 32, 1)\n"


# ---------------------------------------------------------------- a full disk (issue 26)


def test_a_cache_the_disk_cannot_hold_is_refused_before_any_file_is_written(covidx_root, tmp_path, monkeypatch):
    import errno
    import shutil

    cache_dir = tmp_path / "c"
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(cache.shutil, "disk_usage", lambda path: usage._replace(free=1000))

    with pytest.raises(OSError) as caught:
        load_split_arrays(covidx_root, "train", 28, cache_dir=cache_dir, progress=False)

    assert caught.value.errno == errno.ENOSPC and caught.value.filename.startswith(str(cache_dir / "train_"))
    assert "the image cache needs" in caught.value.strerror and "1000" not in caught.value.strerror
    assert list(cache_dir.iterdir()) == []


def test_a_worker_killed_by_sigbus_is_a_full_disk_naming_the_file(tmp_path):
    """A worker writing into the memory-mapped cache on a full disk dies of SIGBUS; that was
    'an image decoding worker ended unexpectedly (exit code -7)'."""
    import errno

    proc = subprocess.Popen([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGBUS)"])
    error = cache._worker_died(proc, tmp_path / "train.npy")
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC
    assert error.filename == str(tmp_path / "train.npy") and "SIGBUS" in error.strerror


# ---------------------------------------------------------------- the cache knows its images (issue 26)


def test_an_image_replaced_after_the_cache_was_built_is_decoded_again(covidx_root, tmp_path):
    """The run trained on the old pixels of an image replaced after the cache was built."""
    cache_dir = tmp_path / "c"
    before, _, records = load_split_arrays(covidx_root, "train", 28, cache_dir=cache_dir, progress=False)
    path = covidx_root / "train" / records[0].filename
    make_image("L", (40, 30), seed=99).save(path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # a later modification time

    after, _, _ = load_split_arrays(covidx_root, "train", 28, cache_dir=cache_dir, progress=False)

    np.testing.assert_array_equal(after[0], preprocess(load_image(path), 32))
    assert not np.array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1:], before[1:])


def test_an_image_truncated_after_the_cache_was_built_stops_with_one_line(covidx_root, tmp_path):
    cache_dir = tmp_path / "c"
    _, _, records = load_split_arrays(covidx_root, "train", 28, cache_dir=cache_dir, progress=False)
    path = covidx_root / "train" / records[1].filename
    path.write_bytes(path.read_bytes()[:60])

    with pytest.raises(UserError, match=rf"{records[1].filename} cannot be decoded"):
        load_split_arrays(covidx_root, "train", 28, cache_dir=cache_dir, progress=False)
