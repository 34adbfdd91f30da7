"""Writing files safely: whole or not at all, and never over a file an input depends on.

Every file the package writes goes to a temporary file in the same folder first and is then
renamed into place (an atomic replace on POSIX and Windows), so a crash or an interrupt
leaves either the old file or the new one, never half of one.  A missing folder on the way to
an output is created; the file gets the permissions of any new file (``0o666`` less the
umask), like the folders.

The temporary file is called ``.<name>.<pid>.<random>.tmp`` beside the output ``<name>``.
Only a process killed outright (SIGKILL, power loss) can leave one behind; the next write of
the same output removes those whose process has ended (on POSIX; elsewhere they stay until
deleted by hand).  Readers never look at them.
"""

from __future__ import annotations

import glob
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` to write a temporary file beside ``path``, then rename it to
    ``path``; the temporary file is removed if ``write`` fails.  Missing parent folders are
    created first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = _new_temporary(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _new_temporary(path: Path) -> Path:
    """Create an empty ``.<name>.<pid>.<random>.tmp`` beside ``path``.

    Opened with mode ``0o666`` so that the umask applies as to any new file (``mkstemp``'s
    ``0o600`` would survive the rename and hide the output from the user's group).
    """
    while True:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:  # another write of the same output drew the same name
            continue
        return tmp


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that writers of ``path`` killed mid-write left beside it
    (``.<name>.<pid>.<random>.tmp`` of a process that no longer runs); returns them.

    Only on POSIX, where a process's existence can be asked without touching it.
    """
    path = Path(path)
    if os.name != "posix" or not path.parent.is_dir():
        return []
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists (POSIX: signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file (after resolving links and ``..``)."""
    return Path(a).resolve() == Path(b).resolve()


def check_outputs(
    outputs: Iterable[str | os.PathLike], protected: Iterable[str | os.PathLike], force: bool
) -> None:
    """Refuse to write an output over a protected file (ever: inputs and the files they depend
    on) or over an existing file (unless ``force``), or where its folder cannot be made.

    Raises ``ValueError`` naming the protected file or the folder, or ``FileExistsError``.
    """
    protected = {Path(p).resolve(): Path(p) for p in protected}
    for output in outputs:
        output = Path(output)
        source = protected.get(output.resolve())
        if source is not None:
            raise ValueError(
                f"output {output} would replace {source}, which an input depends on; "
                "choose another output path"
            )
        if output.exists() and not force:
            raise FileExistsError(f"{output} already exists; pass --force to replace it")
        check_folder(Path(os.path.abspath(output)).parent, output)


def check_folder(folder: str | os.PathLike, what: str | os.PathLike | None = None) -> None:
    """Refuse a folder that :func:`atomic_write` could not make or write in: the nearest
    existing one on its way is a file, or is not writable.  Raises ``ValueError`` naming it
    and ``what`` was to be written (default: the folder)."""
    what = folder if what is None else what
    existing = Path(os.path.abspath(folder))
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"cannot write {what}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {what}: the folder {existing} is not writable")
