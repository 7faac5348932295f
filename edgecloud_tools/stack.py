"""Starting edgecloud servers as child processes: used by ``edgecloud up``, the benchmarks and
the integration tests.

Contract: ``free_port()`` is a port for a server to bind later (below the ephemeral range, so
outgoing connections cannot take it first). ``launch(component, config, workdir)`` writes
``config`` as YAML, starts ``python -m edgecloud_tools serve COMPONENT --config FILE`` with its
output in a log file, and returns a ``ServiceProcess``. ``wait_ready(address)`` polls the Open Inference Protocol ``ServerReady`` until
it answers true. ``ServiceProcess.stop()`` sends SIGTERM, waits, then SIGKILL — only to the pid it
started. ``pause``/``resume`` send SIGSTOP/SIGCONT (fault injection).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml

from protos import inference_pb2 as pb
from protos import inference_pb2_grpc as pb_grpc


PORTS_FROM = 10_000
"""The lowest port ``free_port`` hands out (below it: well-known and registered services)."""
_LINUX_EPHEMERAL = (32768, 60999)
_given: set[int] = set()
_choose = random.SystemRandom()


def ephemeral_port_range() -> tuple[int, int]:
    """The ports the OS gives outgoing connections (and ``bind`` to port 0)."""
    try:
        low, high = (int(part) for part in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return _LINUX_EPHEMERAL


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing is bound to now, for a server that will bind it later (a child process).

    Chosen at random below the OS's ephemeral range: a port from ``bind(0)`` is an ephemeral one,
    and any outgoing connection made before the server binds it (a client, a Redis connection, a
    probe) may take it as its source port, so the server fails to start. Never the same port twice
    in one process. Where the range leaves under 1,000 ports below it, falls back to ``bind(0)``.
    """
    low, _ = ephemeral_port_range()
    if low - PORTS_FROM >= 1000:
        for _ in range(200):
            port = _choose.randrange(PORTS_FROM, low)
            if port not in _given and _bindable(host, port):
                _given.add(port)
                return port
    with socket.socket() as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    _given.add(port)
    return port


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class ServiceProcess:
    name: str
    proc: subprocess.Popen
    address: str
    config_path: Path
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, sig: int) -> None:
        if self.alive():
            os.kill(self.proc.pid, sig)

    def pause(self) -> None:
        self.send(signal.SIGSTOP)

    def resume(self) -> None:
        self.send(signal.SIGCONT)

    def kill(self) -> None:
        self.send(signal.SIGCONT)
        self.send(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> int | None:
        if not self.alive():
            return self.proc.returncode
        self.send(signal.SIGCONT)
        self.send(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def launch(component: str, config: dict[str, Any], workdir: Path, *, name: str | None = None,
           env: dict[str, str] | None = None) -> ServiceProcess:
    name = name or component
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    log_path = workdir / f"{name}.log"
    server = config.get("server", {})
    address = f"{server.get('host', '127.0.0.1')}:{server['port']}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgecloud_tools", "serve", component, "--config", str(config_path)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
    return ServiceProcess(name, proc, address, config_path, log_path)


def wait_ready(service: ServiceProcess | str, timeout: float = 60.0) -> None:
    address = service.address if isinstance(service, ServiceProcess) else service
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while True:
            if isinstance(service, ServiceProcess) and not service.alive():
                raise RuntimeError(f"{service.name} exited with {service.proc.returncode}:\n{service.log_tail()}")
            try:
                if stub.ServerReady(pb.ServerReadyRequest(), timeout=1.0).ready:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                tail = service.log_tail() if isinstance(service, ServiceProcess) else ""
                raise TimeoutError(f"{address} not ready after {timeout:.0f}s\n{tail}")
            time.sleep(0.1)


def edge_config(model_dir: Path | str, port: int, *, threads: int = 1, http_port: int | None = None,
                generative_model_dir: Path | str | None = None, generative_concurrency: int = 1,
                image_model_dir: Path | str | None = None) -> dict[str, Any]:
    models = [{"path": str(model_dir), "intra_op_threads": threads}]
    if image_model_dir is not None:
        models.append({"path": str(image_model_dir), "intra_op_threads": threads})
    if generative_model_dir is not None:
        models.append({"path": str(generative_model_dir), "intra_op_threads": threads,
                       "concurrency": generative_concurrency})
    return {"server": {"host": "127.0.0.1", "port": port, "http_port": http_port, "grace_s": 2}, "models": models}


def cloud_config(port: int, *, threads: int = 1, metrics_port: int | None = None,
                 max_queue_delay_us: int = 2000, http_port: int | None = None,
                 generative_model_dir: Path | str | None = None, image: bool = False) -> dict[str, Any]:
    config: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "http_port": http_port, "grace_s": 2,
                   "metrics_port": metrics_port},
        "runtime": {"device": "auto", "intra_op_threads": threads},
        "batching": {"max_queue_delay_us": max_queue_delay_us}}
    models: list[dict[str, Any]] = [{"kind": "reference"}]
    if image:
        models.append({"kind": "image"})
    if generative_model_dir is not None:
        models.append({"kind": "generative", "path": str(generative_model_dir)})
    if len(models) > 1:
        config["models"] = models
    return config


def gateway_config(port: int, edge: str | None, workers: list[str], *, http_port: int | None = None,
                   metrics_port: int | None = None, routing: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"server": {"host": "127.0.0.1", "port": port, "http_port": http_port, "metrics_port": metrics_port,
                       "grace_s": 2},
            "edge": {"address": edge}, "cloud": {"workers": workers}, "routing": routing or {}}


def launch_redis(workdir: Path, port: int, *, name: str = "redis") -> ServiceProcess:
    """A throwaway ``redis-server`` on ``port`` that keeps nothing on disk."""
    import shutil

    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian package redis-server)")
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir), "--protected-mode", "no"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    return ServiceProcess(name, proc, f"127.0.0.1:{port}", workdir / "redis.conf", log_path)


def launch_proxy(target: str, port: int, workdir: Path, *, delay_ms: float = 300.0, name: str = "proxy",
                 timeout: float = 30.0) -> ServiceProcess:
    """An ``edgecloud proxy`` process on loopback ``port`` forwarding to ``target``, listening once
    this returns (SIGUSR1 adds ``delay_ms`` to every answer, SIGUSR2 restores a clean link). A
    process of its own, so a busy load generator never delays what the proxied link looks like."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgecloud_tools.fault_proxy", "--target", target, "--port", str(port),
             "--delay-ms", str(delay_ms)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    service = ServiceProcess(name, proc, f"127.0.0.1:{port}", log_path, log_path)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return service
        except OSError:
            if not service.alive() or time.monotonic() > deadline:
                service.stop()
                raise RuntimeError(f"the fault proxy on {service.address} did not start\n{service.log_tail()}")
            time.sleep(0.05)


def redis_reply(address: str, command: bytes, timeout: float = 0.5) -> bytes | None:
    """The first bytes of a Redis server's reply to one inline ``command`` (``b"PING"``), or None
    when it does not answer (no client library: this is for tools that watch a throwaway server)."""
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            sock.sendall(command + b"\r\n")
            return sock.recv(64)
    except OSError:
        return None


def wait_redis(service: ServiceProcess, timeout: float = 10.0) -> None:
    """Until the server answers PING."""
    deadline = time.monotonic() + timeout
    while True:
        if (redis_reply(service.address, b"PING") or b"").startswith(b"+PONG"):
            return
        if not service.alive() or time.monotonic() > deadline:
            raise TimeoutError(f"redis on {service.address} did not answer\n{service.log_tail()}")
        time.sleep(0.05)


def rss_bytes(pid: int) -> int | None:
    """Resident set size of a process (Linux), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
