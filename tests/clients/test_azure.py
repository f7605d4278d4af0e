"""Crawling and querying a lake in Azure Blob Storage, served by Azurite (Azure's own
storage emulator) on loopback, reached through the same `az://container/prefix`
locations and environment a real account uses."""

import socket
import subprocess
import threading

import pytest

from conftest import ROOT, check_remote_lake, tarn
from lake import write_lake

# Azurite's documented development account.
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.fixture(scope="module")
def azure(tmp_path_factory):
    from azure.storage.blob import BlobServiceClient

    binary = ROOT / ".venv/node/node_modules/.bin/azurite-blob"
    if not binary.exists():
        pytest.skip("Azurite is not installed: scripts/venv installs it with npm")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(port),
         "--location", str(tmp_path_factory.mktemp("azurite")), "--skipApiVersionCheck", "--loose", "--silent"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        for line in proc.stdout:
            if "successfully listens" in line:
                break
        else:
            pytest.fail("Azurite did not start")
        # Keep reading its log, so a full pipe never blocks it.
        threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
        url = f"http://127.0.0.1:{port}"
        service = BlobServiceClient.from_connection_string(
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint={url}/{ACCOUNT};"
        )
        container = service.create_container("lake")
        root = tmp_path_factory.mktemp("azlake")
        good = write_lake(root)
        for path in root.rglob("*"):
            if path.is_file():
                with open(path, "rb") as f:
                    container.upload_blob(f"raw/{path.relative_to(root).as_posix()}", f)
        env = {"AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": url}
        yield {"env": env, "good": good}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_crawl_and_query_azure(azure, tmp_path):
    check_remote_lake("az://lake/raw", azure["env"], azure["good"], tmp_path)


def test_missing_container_is_a_clear_error(azure, tmp_path):
    out = tarn(tmp_path, "crawl", "az://no-such-container/raw", env=azure["env"])
    assert out.returncode != 0
    assert "no-such-container" in out.stderr and "panicked" not in out.stderr
