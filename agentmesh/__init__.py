"""agentmesh: LLM agents on devices, edge boxes and cloud servers working as one mesh over MQTT.

The public API is what ``__all__`` lists; everything else may change between releases.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agentmesh.errors import (
    AgentMeshError,
    BackendAuthError,
    BackendError,
    BrokerError,
    ConfigError,
    ConnectError,
    ModelError,
    NoMatchError,
    PayloadTooLarge,
    PlanError,
    ProtocolError,
    PublishTimeout,
    TaskError,
    TaskTimeout,
    TransportError,
)
from agentmesh.heap import freeze_startup_heap
from agentmesh.protocol import (
    Capability,
    CapabilityVector,
    Constraints,
    Plan,
    PlanStep,
    Presence,
    StepAssignment,
    StepResult,
    TaskEvent,
    TaskRequest,
    TaskResult,
    Topics,
)

if TYPE_CHECKING:
    from agentmesh.client import MeshClient, TaskHandle, run_task
    from agentmesh.router import Router
    from agentmesh.router_config import RouterConfig

# The service classes pull in numpy, hnswlib and the MQTT client; load them on first use so that
# `import agentmesh.protocol` (e.g. in a third-party client) stays light.
_LAZY = {
    "MeshClient": "agentmesh.client",
    "TaskHandle": "agentmesh.client",
    "run_task": "agentmesh.client",
    "Router": "agentmesh.router",
    "RouterConfig": "agentmesh.router_config",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agentmesh' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__version__ = "0.1.0"

__all__ = [
    "AgentMeshError",
    "BackendAuthError",
    "BackendError",
    "BrokerError",
    "Capability",
    "CapabilityVector",
    "ConfigError",
    "ConnectError",
    "Constraints",
    "MeshClient",
    "ModelError",
    "NoMatchError",
    "PayloadTooLarge",
    "Plan",
    "PlanError",
    "PlanStep",
    "Presence",
    "ProtocolError",
    "PublishTimeout",
    "Router",
    "RouterConfig",
    "StepAssignment",
    "StepResult",
    "TaskError",
    "TaskEvent",
    "TaskHandle",
    "TaskRequest",
    "TaskResult",
    "TaskTimeout",
    "Topics",
    "TransportError",
    "__version__",
    "freeze_startup_heap",
    "run_task",
]
