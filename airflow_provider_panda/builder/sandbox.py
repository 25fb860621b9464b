"""The sandbox: a directory's files packed into a reproducible tarball and uploaded with put_file, as prun
does with the user's working directory."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from airflow_provider_panda import api
from airflow_provider_panda.exceptions import PandaInputError

if TYPE_CHECKING:
    from airflow_provider_panda.builder.prun import PrunTask
    from airflow_provider_panda.hooks.panda import PandaHook


def pack_sandbox(directory: str | os.PathLike[str], build: bool = False, target_dir: str | None = None) -> str:
    """Pack a directory's files (hidden ones left out, as prun does) into a gzipped tarball; its path.

    The archive depends only on the files (names, modes, contents, sorted; no owners or times), so
    an unchanged directory gives identical bytes and the server's copy is reused.
    """
    import gzip
    import tarfile
    import tempfile
    import uuid

    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise PandaInputError(f"sandbox {directory!r} is not a directory" +
                              ("" if os.path.exists(directory) else " (it does not exist)"))
    limit = api.SANDBOX_LIMIT if build else api.SANDBOX_NO_BUILD_LIMIT
    files: list[tuple[str, str]] = []
    total = 0
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = os.path.join(root, name)
            if name.startswith(".") or not os.path.isfile(path):
                continue
            total += os.path.getsize(path)
            files.append((path, os.path.relpath(path, directory)))
    if total > 20 * limit:
        raise PandaInputError(f"sandbox {directory!r} holds {total} bytes of files; the cache takes at most "
                              f"{limit} bytes compressed: leave big files out of it")
    name = f"{'sources' if build else 'jobO'}.{uuid.uuid4()}.tar.gz"
    target = os.path.join(target_dir or tempfile.mkdtemp(prefix="panda-sandbox-"), name)
    with open(target, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed, \
            tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, arcname in files:
            info = tar.gettarinfo(path, arcname)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if info.isfile():
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    size = os.path.getsize(target)
    if size > limit:
        os.remove(target)
        raise PandaInputError(f"sandbox {directory!r} packs to {size} bytes; the cache takes at most "
                              f"{limit} bytes for a {'build' if build else 'no-build'} sandbox")
    return target


def upload_sandbox(hook: PandaHook, task: PrunTask) -> str | None:
    """Pack and upload the task's sandbox (reusing an identical one the server holds); its name there."""
    if task.sandbox is None:
        return None
    import tempfile

    with tempfile.TemporaryDirectory(prefix="panda-sandbox-") as tmp:
        path = pack_sandbox(task.sandbox, build=task._builds(), target_dir=tmp)  # a container never builds
        return hook.put_file(path, use_cache_server=task.vo is None, reuse_sandbox=True)
