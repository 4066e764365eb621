"""Files the installed package carries must match the checkout's originals."""

from __future__ import annotations

from pathlib import Path

import yaml

from agentmesh.router_config import RouterConfig

ROOT = Path(__file__).resolve().parents[2]


def test_packaged_mosquitto_conf_matches_broker_dir() -> None:
    # An installed (non-editable) agentmesh has no broker/ directory and uses its packaged copy.
    assert (ROOT / "agentmesh" / "data" / "mosquitto.conf").read_text() == (
        ROOT / "broker" / "mosquitto.conf"
    ).read_text(), "copy broker/mosquitto.conf to agentmesh/data/mosquitto.conf"


def test_the_example_router_config_lists_every_knob_with_its_default() -> None:
    # configs/router.yaml promises "every knob, with its default"; a new or changed default must
    # show there too.
    example = yaml.safe_load((ROOT / "configs" / "router.yaml").read_text())
    assert example == RouterConfig().model_dump(mode="json")
