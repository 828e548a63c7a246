"""Output folders of ``gemma4 convert`` and ``gemma4 synth``: one rule for where they may write and what
``--force`` may replace, and the staging folder that makes the result appear atomically.

The rules (both commands, through ``staging_folder``):

* OUT must not be, be inside, or contain a protected path: the source folder, the files it reads
  (symlinks followed, so a hub snapshot's blobs count), and for a hub-cache source its repository
  folder and the cache root. Refused as ``ConversionInputError`` (CLI exit status 2).
* An existing OUT is refused unless ``--force``; with ``--force`` only a folder this project wrote is
  replaced: its ``config.json`` carries the marker ``"mlx_gemma4": {"written_by": "gemma4 convert"}``
  (or ``"gemma4 synth"``; folders from before the marker are recognised by their model card), and it
  holds nothing but the files a conversion writes (no sub-folders, no notes). Anything else is refused.
* One run at a time per OUT: a lock file ``.OUT.lock`` beside OUT (``flock``, holding the owner's PID;
  the kernel drops it when the process dies, so a killed run never blocks the next).
* Everything is written into ``.OUT.converting-PID`` beside OUT and renamed into place at the end; a
  rename that would land on an OUT that appeared meanwhile fails (the loser's staging is removed). Any
  exit — error, Ctrl-C, SIGTERM — removes the staging folder; after SIGKILL the next run into the same
  parent folder removes staging folders whose PID is dead, and says so.
* Free space is checked up front against the planned size; ENOSPC / EACCES / EROFS while writing become
  one ``ConversionError`` line naming the place and the size needed.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from mlx_gemma4.errors import ConversionError, ConversionInputError
from mlx_gemma4.jsonfile import read_json_object

MARKER_KEY = "mlx_gemma4"
WRITERS = ("gemma4 convert", "gemma4 synth")
_LEGACY_CARD = "Converted with `gemma4 convert` (mlx-gemma4)"
_STAGING_KINDS = ("converting", "replaced")
_WRITE_ERRORS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
}
SPACE_MARGIN = 16 << 20  # metadata, side files, file-system slack


def is_our_output(folder: Path) -> bool:
    """True when ``folder`` was written by ``gemma4 convert`` or ``gemma4 synth`` (marker or model card)."""
    try:
        config = read_json_object(folder / "config.json", ConversionError)
    except ConversionError:
        return False
    marker = config.get(MARKER_KEY)
    if isinstance(marker, dict) and marker.get("written_by") in WRITERS:
        return True
    readme = folder / "README.md"
    with suppress(OSError, UnicodeDecodeError):
        return readme.is_file() and _LEGACY_CARD in readme.read_text()[:4096]
    return False


def _foreign_entry(folder: Path) -> Path | None:
    """The first entry of an output folder that a conversion would not have written (None if none)."""
    for p in sorted(folder.iterdir()):
        ok = p.is_file() and not p.is_symlink() and (
            p.suffix in (".safetensors", ".json", ".jinja") or p.name in ("README.md", "tokenizer.model", ".DS_Store")
        )
        if not ok:
            return p
    return None


def protected_paths(folder: Path, files: Iterable[Path] = ()) -> list[Path]:
    """What an output folder must stay clear of: the source folder, the files it reads (symlinks
    followed) and, for a hub-cache snapshot, its repository folder and the cache root."""
    out = [folder, folder.resolve()]
    out += [f.resolve() for f in files]
    snap = folder.absolute()
    if snap.parent.name == "snapshots" and snap.parent.parent.name.startswith(("models--", "datasets--")):
        out += [snap.parent.parent, snap.parent.parent.parent]
    return list(dict.fromkeys(p.resolve() for p in out))


def early_protected(src: str | Path) -> list[Path]:
    """What OUT must stay clear of, known before the source is opened: a local folder and its entries, or
    for a hub id its folder in the hub cache and the cache root (so nothing is downloaded for a refused OUT)."""
    local = Path(src).expanduser()
    if local.is_dir():
        with suppress(OSError):
            return protected_paths(local, local.iterdir())
        return protected_paths(local)
    text = str(src)
    if text.count("/") != 1 or text.startswith((".", "/", "~")):
        return []
    from huggingface_hub import constants

    cache = Path(constants.HF_HUB_CACHE).expanduser()
    return list(dict.fromkeys(p.resolve() for p in (cache, cache / f"models--{text.replace('/', '--')}")))


def _relation(out: Path, protected: Path) -> str | None:
    if out == protected:
        return "is"
    if protected in out.parents:
        return "is inside"
    if out in protected.parents:
        return "contains"
    return None


def check_output(out: Path, force: bool, protected: Iterable[Path] = (), what: str = "source folder") -> None:
    """Refuse an output folder that is unsafe to write or replace (``ConversionInputError`` naming it)."""
    if out.is_symlink():
        raise ConversionInputError(f"{out}: the output folder is a symbolic link; give the real path")
    target = out.resolve()
    for p in protected:
        rel = _relation(target, p)
        if rel:
            raise ConversionInputError(f"{out}: the output folder {rel} {p}, which the {what} needs; choose another")
    ancestor = next((a for a in (out, *out.parents) if a.exists()), None)
    if ancestor is not None and ancestor != out and not ancestor.is_dir():
        raise ConversionInputError(f"{out}: cannot create the output folder: {ancestor} is a file")
    if not out.exists():
        return
    if not out.is_dir():
        raise ConversionInputError(f"{out} exists and is not a folder")
    if not force:
        raise ConversionInputError(f"{out} already exists (pass --force to replace it)")
    if not any(out.iterdir()):
        return  # an empty folder: nothing to lose
    if not is_our_output(out):
        raise ConversionInputError(
            f"{out} exists and was not written by gemma4 convert/synth (no '{MARKER_KEY}' marker in its "
            "config.json): --force replaces only earlier outputs; remove it yourself or choose another OUT"
        )
    foreign = _foreign_entry(out)
    if foreign is not None:
        raise ConversionInputError(
            f"{out}: --force would delete {foreign.name}, which a conversion does not write; "
            "move it away or choose another OUT"
        )


def staging_name(out: Path, kind: str = "converting", pid: int | None = None) -> Path:
    """``.OUT.converting-PID`` (or ``.replaced-PID``) beside ``out``."""
    return out.parent / f".{out.name}.{kind}-{os.getpid() if pid is None else pid}"


def remove_stale_staging(out: Path) -> list[Path]:
    """Remove hidden staging folders of dead processes beside ``out`` (any output name); returns them."""
    removed = []
    with suppress(OSError):
        for p in sorted(out.parent.glob(".*.lock")):
            _remove_stale_lock(p)
        for p in sorted(out.parent.iterdir()):
            head, _, pid = p.name.rpartition("-")
            if not (p.name.startswith(".") and head.endswith(tuple(f".{k}" for k in _STAGING_KINDS))):
                continue
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def _remove_stale_lock(path: Path) -> None:
    """Delete a lock file left by a killed run: only when nobody holds it (we can take it ourselves)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.unlink(path)  # a run opening it meanwhile notices the unlink (inode check) and retries
    except OSError:
        pass
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Exclusive right to write ``out``: ``flock`` on ``.OUT.lock`` (released by the kernel if we die)."""
    path = out.parent / f".{out.name}.lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConversionError(
                f"{out}: another conversion into this folder is running (pid {owner}); wait for it or choose "
                "another OUT"
            ) from None
        with suppress(OSError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break  # still the file at that path (not one a finishing owner just unlinked)
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with suppress(OSError):
            os.unlink(path)
        os.close(fd)


def free_bytes(path: Path) -> int:
    """Free bytes on the file system holding ``path`` (or its nearest existing ancestor)."""
    here = next(a for a in (path, *path.parents) if a.exists())
    return shutil.disk_usage(here).free


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def write_error(e: OSError, out: Path, needed: int, free: int | None, tmp: Path | None = None) -> ConversionError:
    """One line for an OSError met while writing ``out`` (or reading a source file on the way)."""
    why = _WRITE_ERRORS.get(e.errno, e.strerror or str(e))
    if e.filename and tmp is not None and tmp not in Path(e.filename).parents \
            and Path(e.filename) not in (out, tmp):
        return ConversionError(f"cannot read {e.filename}: {why}; nothing was written")
    where = f" ({e.filename})" if e.filename else ""
    size = f"; the output needs {_gb(needed)}" if needed else ""
    if free is not None and needed:
        size += f", {_gb(free)} were free at the start"
    return ConversionError(f"cannot write {out}: {why}{where}{size}; nothing was written")


def _stamp(tmp: Path, tool: str) -> None:
    """Put the marker into the staged ``config.json`` (``--force`` replaces only marked folders)."""
    path = tmp / "config.json"
    if not path.is_file():
        return
    import json

    config = read_json_object(path, ConversionError)
    config[MARKER_KEY] = {"written_by": f"gemma4 {tool}"}
    path.write_text(json.dumps(config, indent=2) + "\n")


@contextmanager
def staging_folder(
    out: Path, force: bool, tool: str, protected: Iterable[Path] = (), needed_bytes: int = 0,
    notes: list[str] | None = None,
) -> Iterator[Path]:
    """A hidden folder beside ``out`` that becomes ``out`` only when the block finishes without error.

    Applies every rule of this module's docstring. ``tool`` ("convert" or "synth") goes into the marker;
    ``notes`` receives lines for the report (stale staging folders removed)."""
    out = Path(out).expanduser()
    protected = list(protected)
    check_output(out, force, protected)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConversionInputError(f"{out}: cannot create {out.parent} ({e.strerror or e})") from e
    try:
        lock = output_lock(out)
        lock.__enter__()
    except OSError as e:
        raise ConversionInputError(f"{out}: cannot write in {out.parent} ({e.strerror or e})") from e
    try:
        for p in remove_stale_staging(out):
            if notes is not None:
                notes.append(f"removed {p.name}, the staging folder of an interrupted run (its process is gone)")
        check_output(out, force, protected)  # again, now that no other run can change OUT
        free = free_bytes(out.parent)
        if needed_bytes and free < needed_bytes + SPACE_MARGIN:
            raise ConversionError(
                f"not enough free space for {out}: the output needs {_gb(needed_bytes + SPACE_MARGIN)}, "
                f"{out.parent} has {_gb(free)} free"
            )
        tmp = staging_name(out)
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir()
        except OSError as e:
            raise ConversionInputError(f"{out}: cannot write in {out.parent} ({e.strerror or e})") from e
        try:
            try:
                yield tmp
                _stamp(tmp, tool)
                _commit(tmp, out, force, protected)
            except OSError as e:
                raise write_error(e, out, needed_bytes, free, tmp) from e
        finally:  # every exit path: error, Ctrl-C, SIGTERM (the CLI turns it into KeyboardInterrupt)
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        lock.__exit__(None, None, None)


def _commit(tmp: Path, out: Path, force: bool, protected: list[Path]) -> None:
    """Move the finished staging folder into place; never onto an OUT that appeared meanwhile unless --force."""
    if out.exists() or out.is_symlink():
        if not force:
            raise ConversionError(f"{out} appeared while this run was writing (another process?); "
                                  "this run's output was discarded")
        check_output(out, force, protected)
        old = staging_name(out, "replaced")
        out.rename(old)
        try:
            tmp.rename(out)
        except OSError:
            old.rename(out)
            raise
        shutil.rmtree(old, ignore_errors=True)  # if anything is left, the next run removes it (PID dead)
        return
    try:
        os.rename(tmp, out)  # fails if OUT appeared as a non-empty folder or a file
    except OSError as e:
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise ConversionError(f"{out} appeared while this run was writing (another process?); "
                                  "this run's output was discarded") from e
        raise
