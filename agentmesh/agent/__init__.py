"""The agent runtime: a backend (llama.cpp, OpenAI-compatible endpoint or Python callable) serving
steps from an MQTT inbox, advertised by a versioned capability card (DESIGN.md sections 3, 4, 10).

    from agentmesh.agent import Agent, load_agent_config
    async with Agent(load_agent_config("agents/tools-calc.yaml"), BrokerAddress.resolve()) as agent:
        ...
"""

from agentmesh.agent.config import AgentConfig, load_agent_config, parse_agent_config
from agentmesh.agent.runtime import Agent

__all__ = ["Agent", "AgentConfig", "load_agent_config", "parse_agent_config"]
