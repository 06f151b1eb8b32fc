"""The up-front image check of every kind of `--data`: each image is decoded before anything is written, so a bad
one stops the run at once, named, instead of killing it midway. Image files (`check_images`) and the rows of a
Hugging Face dataset (`swinzoo.train.hf_data`) share the decode (`image_problem`) and the pass (`scan`)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shlex
import stat
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from swinzoo.errors import SwinzooError
from swinzoo.live_display import redraws_in_place
from swinzoo.preprocess import pixel_problem

CHECK_CHUNK = 64  # images per thread-pool task
PROGRESS_FROM = 2000  # show a progress bar when checking at least this many images
# the checks global rank zero passed, for the DDP processes it starts: Lightning's launcher runs the command again in
# each of them, which would decode every image again, N-1 more times on the same CPUs (`checked_by_rank_zero`)
CHECKED_ENV = "_SWINZOO_IMAGES_CHECKED"
# bump when `image_problem` finds new kinds of problems, so files that passed an older check are decoded again
CHECK_VERSION = 1
# a record of a passed check not read for this long is removed when another is written
RECORD_KEEP_DAYS = 90
NOT_REGULAR = "not a regular file (a link to a pipe or a device?)"


def image_problem(source: Path | bytes) -> str | None:
    """Why `source` (a file, or an encoded image's bytes) is not a readable image (None when it is): the structure
    is verified (PNG chunk checksums), then every byte of the image data is decoded, and its pixels must have an
    8-bit meaning (`preprocess.pixel_problem`). A JPEG decodes in draft mode
    (libjpeg's 1/8 scaling): the whole entropy-coded stream is still read, so truncation and broken markers are
    found, at about half the cost."""
    # verify() leaves the image unusable, so the second pass needs a fresh file object
    opened = (lambda: io.BytesIO(source)) if isinstance(source, (bytes, bytearray)) else (lambda: source)
    try:
        if not isinstance(source, (bytes, bytearray)) and not stat.S_ISREG(os.stat(source).st_mode):
            return NOT_REGULAR  # opening a pipe waits for a writer: the check would hang, and Ctrl-C with it
        with Image.open(opened()) as im:
            im.verify()
        with Image.open(opened()) as im:
            im.draft(im.mode, (1, 1))  # a no-op for formats other than JPEG
            im.load()
            pixels = pixel_problem(im)  # a float image would fail midway through training, in to_rgb
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ... on bad files
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        # a buffer's repr (an address) says nothing to the user and differs on every run
        return re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", why)[:200]
    return pixels


def check_workers() -> int:
    """Threads for the image check: decoders release the GIL, and network file systems like more reads in flight."""
    return min(32, (os.cpu_count() or 1) + 4)


def scan(count: int, problems_in: Callable[[int, int], list], where: str = "") -> list:
    """The problems `problems_in(start, stop)` finds in items start..stop-1 of `count`, for every chunk of
    CHECK_CHUNK items, concatenated in item order: chunks run in a thread pool, with a transient progress bar on a
    terminal's stderr from PROGRESS_FROM items. `problems_in` reads its own items, so only the chunks in flight are
    held in memory. A DDP process that global rank zero started after it passed the same scan reads nothing."""
    # surrogateescape: a --data path or working folder that is not UTF-8 hashes as its bytes
    key = hashlib.sha256(f"{os.getcwd()}\0{where}\0{count}".encode("utf-8", "surrogateescape")).hexdigest()[:16]
    if checked_by_rank_zero(key):
        return []
    found = _scan(count, problems_in, where)
    if not found:
        record_checked(key)
    return found


def _scan(count: int, problems_in: Callable[[int, int], list], where: str, console=None) -> list:
    bounds = [(i, min(i + CHECK_CHUNK, count)) for i in range(0, count, CHECK_CHUNK)]
    if len(bounds) <= 1:
        return [p for a, b in bounds for p in problems_in(a, b)]
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = console or Console(stderr=True)  # stdout may be a pipe of results (eval --json)
    show = count >= PROGRESS_FROM and redraws_in_place(console)
    progress = Progress(TextColumn("checking images in {task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), console=console, transient=True, disable=not show)
    found: list = []
    pool = ThreadPoolExecutor(min(check_workers(), len(bounds)), thread_name_prefix="swinzoo-image-check")
    try:
        with progress:
            task = progress.add_task(where or "data", total=count)
            for (a, b), problems in zip(bounds, pool.map(lambda ab: problems_in(*ab), bounds)):
                found += problems
                progress.advance(task, b - a)
    finally:  # Ctrl+C: drop the chunks not started instead of decoding them all first
        pool.shutdown(wait=True, cancel_futures=True)
    return found


def checked_by_rank_zero(key: str) -> bool:
    """Whether this is a DDP process that global rank zero started after passing check `key` (it re-runs the
    command). Rank zero itself always checks (a library user may run twice, the files changed in between); so does
    every rank under a launcher that starts them all at once (torchrun, SLURM): none inherits a record."""
    from swinzoo.train.folder import is_rank_zero

    return not is_rank_zero() and key in os.environ.get(CHECKED_ENV, "").split()


def record_checked(key: str) -> None:
    from swinzoo.train.folder import is_rank_zero

    done = os.environ.get(CHECKED_ENV, "").split()
    if is_rank_zero() and key not in done:
        os.environ[CHECKED_ENV] = " ".join([*done, key])  # inherited by the processes Lightning's launcher starts


def more_unreadable(names: list[str]) -> str:
    """The tail of a bad-image error: how many others there are, the first few named, so one pass finds them all."""
    if not names:
        return ""
    return f" ({len(names)} more unreadable: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"


def check_images(paths: Sequence[Path], where: str = "") -> None:
    """Decode every image in `paths` (`scan`); raise one error naming the first unreadable one (in the order given)
    and how many others there are. A set of files that passed before, unchanged since (`passed_record`), is not
    decoded again.

    Cost: a full decode, about 0.5-1 ms per ImageNet-sized JPEG (draft mode) and a few ms per PNG on one core,
    divided by the thread count: ImageNet-1k's 1.28M training images take roughly a minute on 16 cores (local
    disk); the 50k validation images a few seconds. Unchanged since a passed check: a stat() per file.
    """
    record = passed_record(paths)
    if record is not None and is_recorded(record):
        try:
            os.utime(record)  # read again: keep it (`prune_records`)
        except OSError:
            pass
        return
    bad = scan(len(paths), lambda a, b: [(p, why) for p in paths[a:b] if (why := image_problem(p)) is not None],
               where)
    if bad:
        (path, why), others = bad[0], [p.name for p, _ in bad[1:]]
        if path.name.startswith("._"):
            raise SwinzooError(f"{path} is macOS metadata (a resource fork copied beside the image), not an image"
                               + more_unreadable(others) + "; remove every such file: "
                               f"find {shlex.quote(where or str(path.parent))} -name '._*' -delete")
        raise SwinzooError(f"{path} is not a readable image ({why}); remove or replace it" + more_unreadable(others))
    if record is not None:
        try:
            record.parent.mkdir(parents=True, exist_ok=True)
            # a --data path that is not UTF-8 (a surrogate) is escaped: the record's name is its key, not this text
            record.write_text(f"{len(paths)} images in {where or 'data'}\n", encoding="utf-8",
                              errors="backslashreplace")
            prune_records(record.parent)
        except OSError:  # a record only saves time: a cache that cannot be written means checking again next run
            pass


def prune_records(folder: Path) -> None:
    """Remove the records in `folder` not read for RECORD_KEEP_DAYS: one is left per state of every data folder
    checked (a folder that changes daily adds one a day)."""
    oldest = time.time() - RECORD_KEEP_DAYS * 86400
    for entry in os.scandir(folder):
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < oldest:
                os.unlink(entry.path)
        except OSError:  # removed by another run meanwhile, or not ours to remove
            pass


def is_recorded(record: Path) -> bool:
    try:
        return record.exists()
    except OSError:  # a cache folder this user cannot look into (another user's ~): check as if never recorded
        return False


def cache_folder() -> Path:
    """swinzoo's cache: $SWINZOO_CACHE, else $XDG_CACHE_HOME/swinzoo, else ~/.cache/swinzoo."""
    if os.environ.get("SWINZOO_CACHE"):
        return Path(os.environ["SWINZOO_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "swinzoo"


def passed_record(paths: Sequence[Path]) -> Path | None:
    """The file that says `paths` passed the check as they are now: named by a digest of each file's path, size,
    modification and change times, inode and device, so rewriting, replacing or touching a file changes it (the
    change time cannot be set back). None when a file cannot be stat()ed (the decode names it). The stat()s run
    in a thread pool: on a network file system each is a round trip."""

    def stats(bounds: tuple[int, int]) -> bytes:
        out = []
        for p in paths[bounds[0]:bounds[1]]:
            s = os.stat(p)
            out.append(f"{p}\0{s.st_size}\0{s.st_mtime_ns}\0{s.st_ctime_ns}\0{s.st_ino}\0{s.st_dev}\n")
        return "".join(out).encode("utf-8", "surrogateescape")

    digest = hashlib.sha256(f"swinzoo image check {CHECK_VERSION}\0{len(paths)}\n".encode())
    bounds = [(i, min(i + 4096, len(paths))) for i in range(0, len(paths), 4096)]
    try:
        with ThreadPoolExecutor(min(check_workers(), max(1, len(bounds)))) as pool:
            for chunk in pool.map(stats, bounds):
                digest.update(chunk)
    except OSError:
        return None
    return cache_folder() / "checked-images" / digest.hexdigest()
