"""A real package index for tests: wheels built here, served as a PEP 503 "simple" index by
an HTTP server on loopback, with pip pointed at it through its own configuration
(PIP_INDEX_URL), the way a user's mirror is. The server records every path requested."""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from agent.models.entries import Wheel


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def build_wheel(out_dir: Path, name: str, version: str, members: dict[str, bytes]) -> Path:
    """A valid py3-none-any wheel holding `members` (paths inside the archive) as data."""
    stem = f"{normalized(name).replace('-', '_')}-{version}"
    dist_info = f"{stem}.dist-info"
    files = dict(members)
    files[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    )
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: voice-agent-tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n"
    )
    record = ""
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += f"{path},sha256={digest},{len(data)}\n"
    files[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member, data in files.items():
            archive.writestr(member, data)
    return path


def wheel_of(path: Path, name: str, version: str) -> Wheel:
    return Wheel(name, version, sha256=hashlib.sha256(path.read_bytes()).hexdigest())


class _RecordingHandler(SimpleHTTPRequestHandler):
    def __init__(self, *args: Any, requests: list[str], **kwargs: Any) -> None:
        self._requests = requests
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        self._requests.append(self.path)
        super().do_GET()

    def do_HEAD(self) -> None:
        self._requests.append(self.path)
        super().do_HEAD()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the test reads `requests` instead


class LocalIndex:
    """A directory served over HTTP: `simple/<name>/index.html` links to `files/*.whl`."""

    def __init__(self, root: Path, url: str, requests: list[str]) -> None:
        self.root = root
        self.url = url
        self.requests = requests

    @property
    def simple_url(self) -> str:
        return f"{self.url}/simple/"

    def publish(self, wheel_path: Path, name: str) -> None:
        files = self.root / "files"
        files.mkdir(parents=True, exist_ok=True)
        target = files / wheel_path.name
        target.write_bytes(wheel_path.read_bytes())
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        page = self.root / "simple" / normalized(name) / "index.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(
            f'<html><body><a href="../../files/{target.name}#sha256={digest}">'
            f"{target.name}</a></body></html>\n",
            encoding="utf-8",
        )

    def downloads(self) -> list[str]:
        """The wheel files fetched so far (not the index pages)."""
        return [path.rsplit("/", 1)[-1] for path in self.requests if path.endswith(".whl")]


@contextmanager
def serve_index(root: Path) -> Iterator[LocalIndex]:
    root.mkdir(parents=True, exist_ok=True)
    requests: list[str] = []
    handler = partial(_RecordingHandler, directory=str(root), requests=requests)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="test-index", daemon=True)
    thread.start()
    try:
        yield LocalIndex(root, f"http://127.0.0.1:{server.server_address[1]}", requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
