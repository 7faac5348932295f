"""``edgecloud serve gateway --processes N``: the metrics merge and config checks (pure), and two
real worker processes under a real supervisor in front of a real edge agent."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest
import yaml

from bench.load import text_request
from edgecloud_tools.stack import free_port, gateway_config, wait_ready
from gateway.config import GatewayConfig
from gateway.processes import ProcessesError, aggregate_metrics, check_processes, worker_config
from protos import inference_pb2_grpc as pb_grpc


def config(**server) -> GatewayConfig:
    return GatewayConfig.model_validate({"server": {"port": 8001, "metrics_port": 9100, **server},
                                         "cloud": {"workers": ["127.0.0.1:8201"]}})


def test_every_sample_is_labelled_by_worker_and_headers_appear_once():
    a = ('# HELP x_total Things.\n# TYPE x_total counter\nx_total{kind="a"} 1.0\nx_created 5.0\n'
         '# HELP up Up.\n# TYPE up gauge\nup 1.0\n')
    b = '# HELP x_total Things.\n# TYPE x_total counter\nx_total{kind="a"} 2.0\n# HELP up Up.\n# TYPE up gauge\nup 0.0\n'
    merged = aggregate_metrics([(0, a), (1, b), (2, "")])
    assert merged.count("# HELP x_total") == 1 and merged.count("# TYPE up gauge") == 1
    assert 'x_total{worker="0",kind="a"} 1.0' in merged and 'x_total{worker="1",kind="a"} 2.0' in merged
    assert 'up{worker="0"} 1.0' in merged and 'up{worker="1"} 0.0' in merged
    lines = merged.splitlines()
    assert lines.index('up{worker="1"} 0.0') > lines.index("# TYPE up gauge") > lines.index('x_total{worker="1",kind="a"} 2.0')


@pytest.mark.parametrize("server, field", [({"port": 0}, "server.port"), ({"metrics_port": None}, "server.metrics_port"),
                                           ({"http_port": 0}, "server.http_port"),
                                           ({"metrics_port": 65534}, "server.metrics_port")])
def test_several_processes_need_fixed_ports(server, field):
    with pytest.raises(ProcessesError, match=re.escape(field)):
        check_processes(config(**server), 4)
    check_processes(config(**server), 1)  # one process may pick its ports


def test_a_worker_gets_the_shared_ports_with_reuse_port_and_its_own_metrics_port():
    worker = worker_config(config(http_port=8000), 2)
    assert worker.server.port == 8001 and worker.server.http_port == 8000 and worker.server.reuse_port
    assert worker.server.metrics_port == 9103


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie whose sockets are closed already)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def scrape_or_empty(port: int) -> str:
    try:
        return scrape(port)
    except OSError:
        return ""


def served_by_worker(text: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for match in re.finditer(r'^edgecloud_gateway_served_total\{worker="(\d+)",[^}]*\} (\S+)$', text, re.M):
        counts[match.group(1)] = counts.get(match.group(1), 0.0) + float(match.group(2))
    return counts


async def requests_over_connections(address: str, count: int, connections: int = 16) -> list:
    channels = [grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(connections)]
    try:
        stubs = [pb_grpc.GRPCInferenceServiceStub(c) for c in channels]
        # wait_for_ready: a connection attempt that races a worker's death (reset in its accept
        # queue) is tried again, as any client would, and lands on a live worker
        return await asyncio.gather(*(stubs[i % connections].ModelInfer(text_request([f"processes {i}"]), timeout=30,
                                                                        wait_for_ready=True)
                                      for i in range(count)))
    finally:
        await asyncio.gather(*(c.close() for c in channels))


def test_two_processes_share_the_port_aggregate_metrics_and_restart_a_dead_worker(edge_process, tmp_path):
    port, metrics_port = free_port(), free_port()  # the workers take metrics_port + 1 and + 2
    supervisor, log = start_supervisor(tmp_path, port, metrics_port, edge_process.address)
    seen: set[int] = set()  # every worker pid, killed at the end whatever happens
    try:
        wait_ready(f"127.0.0.1:{port}", 60)
        deadline = time.monotonic() + 60
        while not all(f'worker="{i}"' in scrape_or_empty(metrics_port) for i in (0, 1)):  # both workers up
            assert time.monotonic() < deadline and supervisor.poll() is None, (tmp_path / "supervisor.log").read_text()
            time.sleep(0.2)
        answers = asyncio.run(requests_over_connections(f"127.0.0.1:{port}", 200))
        assert len(answers) == 200 and all(a.parameters["served_by"].string_param == "edge" for a in answers)
        served = served_by_worker(scrape(metrics_port))
        assert sum(served.values()) >= 200 and set(served) == {"0", "1"}, served  # both took connections

        pids = children(supervisor.pid)
        seen.update(pids)
        assert len(pids) == 2
        os.kill(pids[0], signal.SIGKILL)
        while alive(pids[0]):
            time.sleep(0.01)  # dead (its listening socket closed): new connections go to the other
        answers = asyncio.run(requests_over_connections(f"127.0.0.1:{port}", 50))  # the other serves
        assert len(answers) == 50
        deadline = time.monotonic() + 60
        while True:  # started again
            now = children(supervisor.pid)
            seen.update(now)
            if len(now) == 2 and pids[0] not in now:
                break
            assert time.monotonic() < deadline, (tmp_path / "supervisor.log").read_text()
            time.sleep(0.2)
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=30) == 0
        assert not [p for p in now if alive(p)]  # the workers are gone with it
    finally:
        stop_everything(supervisor, seen | set(children(supervisor.pid)), log)


def test_workers_die_with_a_killed_supervisor(edge_process, tmp_path):
    """A supervisor SIGKILLed (no chance to stop its workers) leaves no orphaned gateway behind."""
    port, metrics_port = free_port(), free_port()
    supervisor, log = start_supervisor(tmp_path, port, metrics_port, edge_process.address)
    workers: list[int] = []
    try:
        wait_ready(f"127.0.0.1:{port}", 60)
        deadline = time.monotonic() + 60
        while len(workers := children(supervisor.pid)) < 2:
            assert time.monotonic() < deadline, (tmp_path / "supervisor.log").read_text()
            time.sleep(0.1)
        supervisor.kill()
        supervisor.wait()
        deadline = time.monotonic() + 30
        while [p for p in workers if alive(p)]:  # each drains (SIGTERM) and exits
            assert time.monotonic() < deadline, f"orphaned workers: {[p for p in workers if alive(p)]}"
            time.sleep(0.1)
    finally:
        stop_everything(supervisor, set(workers), log)


def start_supervisor(tmp_path, port: int, metrics_port: int, edge: str):
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(gateway_config(port, edge, [], metrics_port=metrics_port)))
    log = open(tmp_path / "supervisor.log", "wb")
    supervisor = subprocess.Popen([sys.executable, "-m", "edgecloud_tools", "serve", "gateway", "--config", str(path),
                                   "--processes", "2"], stdout=log, stderr=subprocess.STDOUT)
    return supervisor, log


def children(pid: int) -> list[int]:
    return [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]


def stop_everything(supervisor: subprocess.Popen, workers: set[int], log) -> None:
    if supervisor.poll() is None:
        supervisor.kill()
        supervisor.wait()
    for pid in workers:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    log.close()
