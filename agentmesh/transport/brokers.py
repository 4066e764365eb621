"""Brokers we can start ourselves: Mosquitto as a subprocess, or amqtt in-process.

``agentmesh broker`` and the test fixtures use these. Mosquitto is preferred (MQTT 5, shared
subscriptions, tens of thousands of msg/s); amqtt is the pure-Python fallback (MQTT 3.1.1 only).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from agentmesh.errors import BrokerError
from agentmesh.transport.address import BrokerAddress

log = logging.getLogger(__name__)


class RunningBroker(Protocol):
    kind: str
    port: int

    @property
    def address(self) -> BrokerAddress: ...

    async def stop(self) -> None: ...


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def default_mosquitto_conf() -> Path:
    """broker/mosquitto.conf of a checkout, else the copy packaged inside agentmesh."""
    checkout = Path(__file__).resolve().parents[2] / "broker" / "mosquitto.conf"
    if checkout.is_file():
        return checkout
    return Path(str(resources.files("agentmesh").joinpath("data/mosquitto.conf")))


class MosquittoBroker:
    """Mosquitto as a child process on ``port`` with ``broker/mosquitto.conf``."""

    kind = "mosquitto"

    def __init__(
        self,
        port: int | None = None,
        *,
        conf: Path | None = None,
        data_dir: Path | None = None,
        binary: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.binary = binary or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.port = port or free_port()
        self.host = host
        self.base_conf = conf or default_mosquitto_conf()
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="agentmesh-mosquitto-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("mosquitto") is not None or Path("/usr/sbin/mosquitto").exists()

    @property
    def address(self) -> BrokerAddress:
        return BrokerAddress(self.host, self.port)

    def _write_conf(self) -> Path:
        conf = self.data_dir / "mosquitto.conf"
        lines = [self.base_conf.read_text()]
        if not self._grant_data_dir():
            lines.append("\nuser root\n")
        lines.append(f"\nlistener {self.port} {self.host}\n")
        lines.append(f"persistence_location {self.data_dir}/\n")
        lines.append(f"log_dest file {self.data_dir}/mosquitto.log\n")
        conf.write_text("".join(lines))
        return conf

    def _grant_data_dir(self) -> bool:
        """Let Mosquitto write its log and persistence file into ``data_dir``.

        Started as root, Mosquitto drops privileges to the ``mosquitto`` user, which cannot write to
        a private temp dir: retained messages would silently not survive a restart. Hand the dir to
        that user when it can reach it; returns False when it cannot (Mosquitto is then told to stay
        root, which it allows with a warning).
        """
        if os.geteuid() != 0:
            return True
        try:
            account = pwd.getpwnam("mosquitto")
        except KeyError:
            return False
        parents = self.data_dir.resolve().parents
        if not all(p.stat().st_mode & stat.S_IXOTH for p in parents):
            return False
        for path in [self.data_dir, *self.data_dir.iterdir()]:
            os.chown(path, account.pw_uid, account.pw_gid)
        return True

    def start_sync(self, timeout: float = 10.0) -> None:
        if not self.available():
            raise BrokerError("mosquitto is not installed (apt-get install -y mosquitto)", kind=self.kind)
        if port_answers(self.host, self.port):
            raise BrokerError(f"port {self.port} is already in use", kind=self.kind)
        conf = self._write_conf()
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                logfile = self.data_dir / "mosquitto.log"
                if logfile.exists():
                    err += logfile.read_text(errors="replace")[-2000:]
                raise BrokerError(f"exited with {self.proc.returncode}: {err.strip()}", kind=self.kind)
            if port_answers(self.host, self.port, 0.2):
                return
            time.sleep(0.05)
        self.stop_sync()
        raise BrokerError(f"did not listen on port {self.port} within {timeout:g}s", kind=self.kind)

    def stop_sync(self, *, kill: bool = False) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()  # SIGTERM: mosquitto saves retained messages before exiting
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def cleanup(self) -> None:
        self.stop_sync()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    async def start(self, timeout: float = 10.0) -> None:
        await asyncio.to_thread(self.start_sync, timeout)

    async def stop(self) -> None:
        await asyncio.to_thread(self.cleanup)


class AmqttBroker:
    """The embedded amqtt broker, running on the current event loop."""

    kind = "amqtt"

    def __init__(self, port: int | None = None, *, host: str = "127.0.0.1") -> None:
        self.port = port or free_port()
        self.host = host
        self._broker: Any = None

    @property
    def address(self) -> BrokerAddress:
        return BrokerAddress(self.host, self.port)

    def config(self) -> dict[str, Any]:
        return {
            "listeners": {
                "default": {"type": "tcp", "bind": f"{self.host}:{self.port}", "max_connections": 1000}
            },
            "timeout_disconnect_delay": 0,
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }

    async def start(self) -> None:
        from amqtt.broker import Broker  # heavy import, only when this broker is used

        if port_answers(self.host, self.port):
            raise BrokerError(f"port {self.port} is already in use", kind=self.kind)
        self._broker = Broker(self.config())
        try:
            await self._broker.start()
        except Exception as exc:
            raise BrokerError(f"failed to start: {exc}", kind=self.kind) from exc

    async def stop(self) -> None:
        if self._broker is not None:
            broker, self._broker = self._broker, None
            await broker.shutdown()


async def start_broker(port: int | None = None, *, prefer: str = "auto") -> RunningBroker:
    """Start Mosquitto if it is installed (or asked for), else the embedded amqtt broker."""
    broker: MosquittoBroker | AmqttBroker
    if prefer == "mosquitto" or (prefer == "auto" and MosquittoBroker.available()):
        broker = MosquittoBroker(port)
    else:
        broker = AmqttBroker(port)
    await broker.start()
    log.info("%s broker listening on %s", broker.kind, broker.address)
    return broker
