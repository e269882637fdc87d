"""The real download code against a local HTTP server: checksum, reuse, clean failure."""

import hashlib
import http.server
import threading
from functools import partial

import pytest
from synthetic import write_cifar10_tarball

from transfer_pipeline.data import sources
from transfer_pipeline.plumbing.errors import PipelineError


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A CIFAR-10 tarball on http://127.0.0.1:<port>/, downloads going to tmp_path."""
    root = tmp_path / "server"
    tarball = write_cifar10_tarball(root / "cifar-10-python.tar.gz", n_per_class=3)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(sources, "DOWNLOAD_DIR", tmp_path / "downloads")
    for variable in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    url = f"http://127.0.0.1:{server.server_address[1]}/cifar-10-python.tar.gz"
    yield url, hashlib.md5(tarball.read_bytes()).hexdigest(), server
    server.shutdown()


def test_download_verifies_the_checksum_and_is_reused_offline(served):
    url, md5, server = served
    path = sources.download(url, md5)
    assert sources.md5_of(path) == md5
    assert len(sources.load_cifar(path, "cifar10").labels) == 30
    server.shutdown()  # no network from now on: the verified file is reused
    assert sources.download(url, md5) == path


def test_download_with_a_wrong_checksum_fails_and_keeps_nothing(served):
    url, _, _ = served
    with pytest.raises(PipelineError, match="has MD5 .* expected f{32}"):
        sources.download(url, "f" * 32)
    # No half-verified file left behind (nor the folder, where the download made it).
    assert not sources.DOWNLOAD_DIR.exists() or not list(sources.DOWNLOAD_DIR.iterdir())
