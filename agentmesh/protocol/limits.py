"""Limits of the wire contract (DESIGN.md sections 3 and 4)."""

ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_CAPABILITIES = 64
MAX_PLAN_STEPS = 32
DEFAULT_NAMESPACE = "agentmesh/v1"
# Topic levels a topic may have: EMQX's default max_topic_levels (Mosquitto refuses over 200 and
# drops the connection of the client that tried).
MAX_TOPIC_LEVELS = 128
