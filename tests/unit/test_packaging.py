"""Files the installed package carries must match the checkout's originals."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_packaged_mosquitto_conf_matches_broker_dir() -> None:
    # An installed (non-editable) agentmesh has no broker/ directory and uses its packaged copy.
    assert (ROOT / "agentmesh" / "data" / "mosquitto.conf").read_text() == (
        ROOT / "broker" / "mosquitto.conf"
    ).read_text(), "copy broker/mosquitto.conf to agentmesh/data/mosquitto.conf"
