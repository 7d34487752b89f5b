"""A model version folder: `model.onnx` + `manifest.toml` (format 1, models/README.md), written
beside its destination and renamed into place, so the daemon never sees a half-written one."""
import contextlib
import hashlib
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

FORMAT = 1


class Exists(Exception):
    """The destination folder already exists; versions are immutable, so this is refused."""


def toml_str(text):
    """A TOML basic string. Quotes, backslashes and control characters are escaped; everything
    else (non-ASCII included) is valid as is."""
    out = []
    for ch in str(text):
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"refusing to write the non-finite number {v} into a manifest")
        return repr(v)  # shortest repr that round-trips: TOML reads back the same float64
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return toml_str(v)


def manifest_text(top, tables):
    """top: {key: value} written first; tables: {table: {key: value}} in order. None values
    are left out (TOML has no null)."""
    lines = [f"{k} = {toml_value(v)}" for k, v in top.items() if v is not None]
    for table, items in tables.items():
        lines += ["", f"[{table}]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in items.items() if v is not None]
    return "\n".join(lines) + "\n"


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def check_free(out):
    """Fails early, before any training, if out is taken."""
    if os.path.lexists(out):
        raise Exists(f"{out} already exists; model versions are immutable, choose a new --version "
                     "or --out")


# A temporary folder this old was left by a worker killed mid-way (SIGKILL after its grace):
# nothing else would ever remove it. A younger one may be a concurrent run's.
STALE_S = 3600


def remove_stale(folder, pattern):
    """Removes the folders in folder matching pattern older than STALE_S."""
    now = time.time()
    for p in folder.glob(pattern):
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime > STALE_S:
                shutil.rmtree(p, ignore_errors=True)


def staging(out):
    """A fresh temporary folder beside out (same file system, so the final rename is atomic).
    The dot prefix marks it as not a model version for the daemon's registry. One an earlier
    run for out left (killed mid-way) is removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # Any version's: the daemon names each version anew, so a killed run's is never reused.
    # (A run keeps its own fresh while it trains: keep_fresh.)
    remove_stale(out.parent, ".*.tmp-*")
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))


def keep_fresh(tmp, every_s=60.0):
    """A callable that touches tmp at most every every_s seconds, so that a run training for
    longer than STALE_S keeps its staging folder from another run's clean-up."""
    last = [time.time()]

    def touch():
        now = time.time()
        if now - last[0] >= every_s:
            last[0] = now
            with contextlib.suppress(OSError):
                os.utime(tmp)
    return touch


def sync(path):
    """fsyncs one file or folder (a folder: the names in it, a rename made there)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_folder(folder):
    """fsyncs every file in folder (recursively) and the folder itself."""
    for p in sorted(Path(folder).rglob("*"), reverse=True):
        sync(p)
    sync(folder)


def publish(tmp, out, files):
    """Writes files {name: bytes} into tmp, syncs them, and renames tmp to out."""
    for name, data in files.items():
        with open(tmp / name, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    tmp.chmod(0o755)  # mkdtemp makes 0700; the daemon may run as another user
    check_free(out)  # rename() would silently replace an empty folder that appeared meanwhile
    os.rename(tmp, out)
    sync(out.parent)  # make the rename itself durable


def discard(tmp):
    shutil.rmtree(tmp, ignore_errors=True)
