"""Verified downloads of dataset files into a local cache, with an offline mirror directory as an alternative.

:func:`fetch` is the one way a dataset plugin obtains a file. It returns a local copy whose SHA-256 matches the
expected digest, taking it from the first of:

1. the cache (``cache_dir``, else ``$ANYORDER_CACHE``, else ``~/.cache/anyorder``), when the file there verifies;
2. a mirror directory (``mirror``, else ``$ANYORDER_DATA_MIRROR``) that holds a file of that name;
3. the URL, downloaded with :mod:`urllib`.

A new copy is written to a uniquely named temporary file in the cache directory, verified, fsynced and then renamed
over the final name with :func:`os.replace`. Readers therefore see either no file or a complete, verified one, and
two processes fetching the same file at once cannot corrupt each other (the last rename wins; both are identical).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from anyorder.errors import ConfigError, DataError

CACHE_ENV = "ANYORDER_CACHE"
"""Environment variable that overrides the default cache directory."""

MIRROR_ENV = "ANYORDER_DATA_MIRROR"
"""Environment variable naming a local directory that holds dataset files (for offline machines)."""

DEFAULT_TIMEOUT_S = 60.0
"""Seconds a download may wait for the server to connect or send the next chunk."""

_CHUNK = 1 << 20
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_USER_AGENT = "anyorder-downloader/0.1 (+urllib)"

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """The cache directory: ``$ANYORDER_CACHE`` if set, else ``~/.cache/anyorder``."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "anyorder"


def default_mirror() -> Path | None:
    """The mirror directory named by ``$ANYORDER_DATA_MIRROR``, or None when it is unset or empty."""
    env = os.environ.get(MIRROR_ENV, "").strip()
    return Path(env).expanduser() if env else None


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as 64 lowercase hex digits (read in chunks, so size does not matter)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    filename: str,
    *,
    url: str,
    sha256: str,
    mirror: str | Path | None = None,
    cache_dir: str | Path | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """A verified local copy of ``filename``: from the cache, else the mirror, else ``url`` (see the module doc).

    ``sha256`` is the expected digest (hex). ``mirror`` and ``cache_dir`` default to the environment settings; an
    empty string counts as unset. A mirror file that fails verification is an error, not a reason to go online:
    the mirror is the copy the user chose. Raises :class:`~anyorder.errors.DataError` when the file cannot be obtained or
    does not match ``sha256`` (nothing is then left in the cache), and :class:`~anyorder.errors.ConfigError` for a
    malformed ``filename`` or ``sha256``.
    """
    expected = _check_sha256(sha256, filename)
    _check_filename(filename)
    cache = Path(cache_dir).expanduser() if cache_dir not in (None, "") else default_cache_dir()
    target = cache / filename

    if target.is_file():
        actual = sha256_file(target)
        if actual == expected:
            return target
        # A stale or damaged cached copy is replaced rather than trusted; the fresh copy is verified below.
        log.warning("cached %s has sha256 %s, expected %s; fetching it again", target, actual, expected)

    mirror_dir = Path(mirror).expanduser() if mirror not in (None, "") else default_mirror()
    if mirror_dir is not None and (mirror_dir / filename).is_file():
        source = mirror_dir / filename
        log.info("copying %s from the mirror %s", filename, mirror_dir)
        with open(source, "rb") as f:
            return _store(f, target, expected, source=f"mirror file {source}")

    if not url:
        where = f"the mirror {mirror_dir}" if mirror_dir is not None else f"a mirror (${MIRROR_ENV} is unset)"
        raise DataError(f"{filename} is not in the cache {cache} nor in {where}, and no URL is configured to "
                        f"download it from")
    log.info("downloading %s from %s", filename, url)
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return _store(response, target, expected, source=f"URL {url}")
    except DataError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        # URLError wraps the socket error (refused, no DNS, timeout) in .reason; HTTPError reads best as itself.
        reason: object = exc
        if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
            reason = exc.reason
        raise DataError(
            f"cannot download {filename} from {url}: {reason}. If this machine is offline, copy {filename} "
            f"(sha256 {expected}) into a local directory and point the dataset's `mirror` option or the "
            f"{MIRROR_ENV} environment variable at it"
        ) from exc


def _store(reader: BinaryIO, target: Path, expected: str, *, source: str) -> Path:
    """Copy ``reader`` into ``target`` atomically if its bytes hash to ``expected``; else raise and keep nothing."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # A unique temp name in the target's directory: concurrent fetches never share a file, and os.replace within
    # one file system is atomic.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for chunk in iter(lambda: reader.read(_CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if actual != expected:
            raise DataError(
                f"checksum mismatch for {target.name} from {source}: expected sha256 {expected}, got {actual}. "
                f"The file was not kept; the source is damaged, truncated or a different version"
            )
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return target


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory, and then there is nothing to do.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_sha256(sha256: str, filename: str) -> str:
    value = (sha256 or "").strip().lower()
    if not _SHA256_RE.match(value):
        raise ConfigError(
            f"the expected sha256 of {filename} must be 64 hex digits (got {sha256!r}); compute it with "
            f"`sha256sum FILE` or anyorder.downloads.sha256_file"
        )
    return value


def _check_filename(filename: str) -> None:
    # The name is joined to the cache and mirror directories, so it must not reach outside them.
    if not filename or filename in (".", "..") or "/" in filename or "\\" in filename or "\0" in filename:
        raise ConfigError(f"a download's file name must be a plain name without directories (got {filename!r})")
