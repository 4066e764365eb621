"""What the model sees for a step (agent/prompt.py)."""

from __future__ import annotations

from agentmesh.agent.prompt import StepRequest, chat_messages, user_message
from agentmesh.protocol import PreviousAttempt


def test_plain_step() -> None:
    msgs = chat_messages(StepRequest(instruction="  Capital of Peru?  ", system_prompt="Be brief."))
    assert msgs == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of Peru?"},
    ]
    assert chat_messages(StepRequest(instruction="x"))[0]["role"] == "user"


def test_inputs_previous_and_schema_are_included() -> None:
    text = user_message(
        StepRequest(
            instruction="Summarize.",
            inputs={"s1": "Lima is the capital.", "s2": "Peru is in South America."},
            previous=PreviousAttempt(
                agent_id="phone-1", tier="device", output="Lime", reason="low confidence 0.2"
            ),
            response_format={"type": "object"},
        )
    )
    assert text.startswith("Summarize.")
    assert "Earlier results:\n- Lima is the capital.\n- Peru is in South America." in text
    assert "phone-1" in text and "Lime" in text and "low confidence 0.2" in text
    assert '{"type":"object"}' in text
    assert text.index("Lima") < text.index("Lime")
    one = user_message(StepRequest(instruction="Translate it into Italian.", inputs={"s1": " Ciao? "}))
    assert one == "Translate it into Italian.\n\nEarlier result: Ciao?"


def test_a_previous_attempt_without_an_answer_is_left_out() -> None:
    declined = PreviousAttempt(agent_id="units-1", tier="device", output="", reason="declined: not a unit")
    text = user_message(
        StepRequest(instruction="What is the boiling point of water in kelvin?", previous=declined)
    )
    assert text == "What is the boiling point of water in kelvin?"
