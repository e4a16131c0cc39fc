"""anyorder.downloads: cache reuse, mirror copies, real HTTP downloads, checksum errors and atomicity."""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from anyorder.downloads import CACHE_ENV, MIRROR_ENV, default_cache_dir, fetch, sha256_file
from anyorder.errors import ConfigError, DataError

CONTENT = b"first line\nsecond line \xe2\x9c\x93\n" * 1000
DIGEST = hashlib.sha256(CONTENT).hexdigest()
WRONG = "0" * 64


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """An HTTP server on 127.0.0.1 serving a fresh directory: (base URL, directory, paths requested)."""
    root = tmp_path / "served"
    root.mkdir()
    requests: list[str] = []

    class Handler(_QuietHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    # A short poll interval makes shutdown() quick.
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root, requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The tests pass directories explicitly; a developer's own settings must not leak in.
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    monkeypatch.delenv(CACHE_ENV, raising=False)


def _closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: a download there fails at once, like an offline machine."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/data.txt"


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(CONTENT)
    assert sha256_file(path) == DIGEST
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def test_download_over_http(server: tuple[str, Path, list[str]], tmp_path: Path) -> None:
    url, root, requests = server
    (root / "data.txt").write_bytes(CONTENT)
    cache = tmp_path / "cache"
    got = fetch("data.txt", url=f"{url}/data.txt", sha256=DIGEST, cache_dir=cache)
    assert got == cache / "data.txt"
    assert got.read_bytes() == CONTENT
    assert requests == ["/data.txt"]
    assert _leftovers(cache) == ["data.txt"]  # no temporary file left behind


def test_cached_copy_is_reused_without_network(server: tuple[str, Path, list[str]], tmp_path: Path) -> None:
    url, root, requests = server
    (root / "data.txt").write_bytes(CONTENT)
    cache = tmp_path / "cache"
    fetch("data.txt", url=f"{url}/data.txt", sha256=DIGEST, cache_dir=cache)
    # Second time: the URL is unreachable, and the cached, verified copy is returned without trying it.
    got = fetch("data.txt", url=_closed_port_url(), sha256=DIGEST, cache_dir=cache)
    assert got.read_bytes() == CONTENT
    assert requests == ["/data.txt"]


def test_damaged_cache_is_fetched_again(server: tuple[str, Path, list[str]], tmp_path: Path) -> None:
    url, root, requests = server
    (root / "data.txt").write_bytes(CONTENT)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "data.txt").write_bytes(CONTENT[:100])  # e.g. truncated by an old, non-atomic tool
    got = fetch("data.txt", url=f"{url}/data.txt", sha256=DIGEST, cache_dir=cache)
    assert got.read_bytes() == CONTENT
    assert requests == ["/data.txt"]


def test_mirror_copy(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "data.txt").write_bytes(CONTENT)
    cache = tmp_path / "cache"
    got = fetch("data.txt", url=_closed_port_url(), sha256=DIGEST.upper(), mirror=mirror, cache_dir=cache)
    assert got == cache / "data.txt" and got.read_bytes() == CONTENT
    assert (mirror / "data.txt").read_bytes() == CONTENT  # copied, not moved
    assert _leftovers(cache) == ["data.txt"]


def test_mirror_and_cache_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "data.txt").write_bytes(CONTENT)
    monkeypatch.setenv(MIRROR_ENV, str(mirror))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "envcache"))
    assert default_cache_dir() == tmp_path / "envcache"
    got = fetch("data.txt", url=_closed_port_url(), sha256=DIGEST)
    assert got == tmp_path / "envcache" / "data.txt" and got.read_bytes() == CONTENT


def test_mirror_without_the_file_falls_back_to_the_url(server: tuple[str, Path, list[str]], tmp_path: Path) -> None:
    url, root, requests = server
    (root / "data.txt").write_bytes(CONTENT)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    got = fetch("data.txt", url=f"{url}/data.txt", sha256=DIGEST, mirror=mirror, cache_dir=tmp_path / "cache")
    assert got.read_bytes() == CONTENT
    assert requests == ["/data.txt"]


def test_checksum_mismatch_from_mirror(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "data.txt").write_bytes(CONTENT)
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        fetch("data.txt", url=_closed_port_url(), sha256=WRONG, mirror=mirror, cache_dir=cache)
    message = str(info.value)
    assert "data.txt" in message and WRONG in message and DIGEST in message
    assert str(mirror / "data.txt") in message  # names the source
    assert _leftovers(cache) == []  # neither the final file nor a temporary one


def test_checksum_mismatch_over_http_keeps_nothing(server: tuple[str, Path, list[str]], tmp_path: Path) -> None:
    url, root, _ = server
    (root / "data.txt").write_bytes(CONTENT + b"tampered")
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        fetch("data.txt", url=f"{url}/data.txt", sha256=DIGEST, cache_dir=cache)
    message = str(info.value)
    assert DIGEST in message and hashlib.sha256(CONTENT + b"tampered").hexdigest() in message
    assert f"{url}/data.txt" in message
    assert _leftovers(cache) == []


def test_failed_fetch_leaves_the_cached_file_alone(tmp_path: Path) -> None:
    # A cached file that fails verification is only replaced by a copy that passes; a failed fetch leaves it as is.
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "data.txt").write_bytes(b"old version")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "data.txt").write_bytes(b"also wrong")
    with pytest.raises(DataError):
        fetch("data.txt", url="", sha256=DIGEST, mirror=mirror, cache_dir=cache)
    assert (cache / "data.txt").read_bytes() == b"old version"
    assert _leftovers(cache) == ["data.txt"]


def test_offline_error_names_url_and_mirror_setting(tmp_path: Path) -> None:
    url = _closed_port_url()
    with pytest.raises(DataError) as info:
        fetch("data.txt", url=url, sha256=DIGEST, cache_dir=tmp_path / "cache", timeout=5)
    message = str(info.value)
    assert url in message and MIRROR_ENV in message and "mirror" in message
    assert _leftovers(tmp_path / "cache") == []


def test_http_error_is_reported(server: tuple[str, Path, list[str]], tmp_path: Path) -> None:
    url, _, _ = server
    with pytest.raises(DataError, match="404"):
        fetch("missing.txt", url=f"{url}/missing.txt", sha256=DIGEST, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("name", ["", "..", "a/b.txt", "../escape.txt"])
def test_bad_filename(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="plain name"):
        fetch(name, url="http://127.0.0.1/x", sha256=DIGEST, cache_dir=tmp_path)


@pytest.mark.parametrize("digest", ["", "abc", "g" * 64])
def test_bad_sha256(tmp_path: Path, digest: str) -> None:
    with pytest.raises(ConfigError, match="64 hex digits"):
        fetch("data.txt", url="http://127.0.0.1/x", sha256=digest, cache_dir=tmp_path)


def test_concurrent_fetches_do_not_corrupt(server: tuple[str, Path, list[str]], tmp_path: Path) -> None:
    url, root, _ = server
    (root / "data.txt").write_bytes(CONTENT)
    cache = tmp_path / "cache"
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            fetch("data.txt", url=f"{url}/data.txt", sha256=DIGEST, cache_dir=cache)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert (cache / "data.txt").read_bytes() == CONTENT
    assert _leftovers(cache) == ["data.txt"]
