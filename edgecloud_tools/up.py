"""``edgecloud up``: the whole stack on localhost with one command.

Builds the INT8 model when missing, starts an edge agent, a cloud worker and the gateway as child
processes, waits until each answers, prints where each listens and sample calls, then runs until
Ctrl-C or SIGTERM and stops every child it started (by pid), gateway first.
"""

from __future__ import annotations

import logging
import signal
import sys
import tempfile
import threading
from pathlib import Path

from edgecloud_tools.stack import cloud_config, edge_config, free_port, gateway_config, launch, wait_ready

log = logging.getLogger(__name__)


PORT_ROLES = {"http": "gateway HTTP", "grpc": "gateway gRPC", "gateway_metrics": "gateway metrics",
              "edge": "edge agent gRPC", "edge_http": "edge agent HTTP", "cloud": "cloud worker gRPC",
              "cloud_http": "cloud worker HTTP", "metrics": "cloud worker metrics"}
GENERATIVE_MODEL = "smollm2-135m-instruct"


def ports_in_use(ports: dict[str, int], host: str = "127.0.0.1") -> list[str]:
    """``"8001 (gateway gRPC)"`` for every port of ``ports`` something already listens on."""
    import socket

    taken = []
    for name, port in ports.items():
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                taken.append(f"{port} ({PORT_ROLES.get(name, name)})")
    return taken


def _ports(random_ports: bool) -> dict[str, int]:
    if random_ports:
        return {name: free_port() for name in PORT_ROLES}
    return {"http": 8000, "grpc": 8001, "gateway_metrics": 8002, "edge": 8101, "edge_http": 8100, "cloud": 8201,
            "cloud_http": 8200, "metrics": 8202}


def redis_reachable(url_host: str = "127.0.0.1", port: int = 6379) -> bool:
    """Whether a Redis answers PING there (decides what ``up`` tells the user about the cache)."""
    import socket

    try:
        with socket.create_connection((url_host, port), timeout=0.3) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def sample_calls(grpc_port: int, http_port: int) -> str:
    return f"""
  SDK (Python; run with .venv/bin/python):
    from gateway.client import Client
    with Client("127.0.0.1:{grpc_port}") as client:
        result = client.embed(["hello edge", "hello cloud"])
        print(result.embeddings.shape, result.served_by, result.route_reason)

  tritonclient (unmodified; run with .venv-triton/bin/python, it needs protobuf < 7):
    import numpy as np, tritonclient.grpc as tc
    client = tc.InferenceServerClient("127.0.0.1:{grpc_port}")
    text = tc.InferInput("text", [1], "BYTES"); text.set_data_from_numpy(np.array([b"hello"], dtype=object))
    print(client.infer("all-MiniLM-L6-v2", [text]).as_numpy("embedding").shape)

  curl (REST):
    curl -s -X POST localhost:{http_port}/v2/models/all-MiniLM-L6-v2/infer \\
      -H 'Content-Type: application/json' \\
      -d '{{"inputs":[{{"name":"text","shape":[1],"datatype":"BYTES","data":["hello"]}}]}}' -D - | head -20
"""


def generation_calls(http_port: int, edge_http: int, cloud_http: int) -> str:
    prompt = "<|im_start|>user\\nWrite a haiku about the edge.<|im_end|>\\n<|im_start|>assistant\\n"
    return f"""
  text generation ({GENERATIVE_MODEL}; the edge streams INT4 onnxruntime-genai, the cloud torch), through the
  gateway (routed on time to first token, hedged, failed over mid-stream; OpenAI-compatible API):
    curl -sN localhost:{http_port}/v1/chat/completions -H 'Content-Type: application/json' \\
      -d '{{"model":"{GENERATIVE_MODEL}","stream":true,"max_tokens":48,
           "messages":[{{"role":"user","content":"Write a haiku about the edge."}}]}}'
    curl -sN -X POST localhost:{http_port}/v2/models/{GENERATIVE_MODEL}/generate_stream \\
      -d '{{"text_input":"{prompt}","stream":true,"sampling_parameters":{{"max_tokens":48,"temperature":0}}}}'
    (openai.OpenAI(base_url="http://127.0.0.1:{http_port}/v1"), tritonclient's start_stream against the
     gateway's gRPC port, and the edge / cloud directly: localhost:{edge_http} / localhost:{cloud_http})
"""


def _generation_smoke(http_port: int) -> str:
    """One chat completion through the gateway's OpenAI API."""
    import json
    import urllib.request

    body = json.dumps({"model": GENERATIVE_MODEL, "max_tokens": 12, "temperature": 0,
                       "messages": [{"role": "user", "content": "Say hello."}]}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{http_port}/v1/chat/completions", body,
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.load(response)
    where = answer.get("edgecloud", {})
    return (f"sample generation through the gateway (OpenAI API, served by {where.get('served_by', '?')}): "
            f"{answer['choices'][0]['message']['content']!r} ({answer['usage']['completion_tokens']} tokens, "
            f"{answer['choices'][0]['finish_reason']})")


def _image_smoke(grpc_port: int) -> str:
    """scikit-image's coffee photo classified through the gateway (when scikit-image is installed)."""
    from importlib.util import find_spec

    from gateway.client import Client

    spec = find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return "sample classification: skipped (scikit-image, which ships the sample photo, is not installed)"
    photo = Path(next(iter(spec.submodule_search_locations))) / "data" / "coffee.png"
    with Client(f"127.0.0.1:{grpc_port}", timeout_s=60) as client:
        result = client.classify([str(photo)], top_k=1)
    best = result.top[0]
    return (f"sample classification through the gateway (served by {result.served_by}, {result.route_reason}): "
            f"coffee.png -> {best.label} {best.score:.2f}   (examples/classify.py for more)")


def _smoke_call(grpc_port: int) -> str:
    import grpc

    from edgecloud.codec import serialize_bytes
    from protos import inference_pb2 as pb
    from protos import inference_pb2_grpc as pb_grpc

    msg = pb.ModelInferRequest(model_name="all-MiniLM-L6-v2")
    msg.inputs.add(name="text", datatype="BYTES", shape=[1])
    msg.raw_input_contents.append(serialize_bytes([b"edgecloud up smoke test"]))
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(msg, timeout=30)
    return (f"sample call: embedding {list(response.outputs[0].shape)} served by "
            f"{response.parameters['served_by'].string_param} ({response.parameters['route_reason'].string_param})")


def run(args) -> int:
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ports = _ports(getattr(args, "random_ports", False))
    taken = ports_in_use(ports)
    if taken:  # before anything starts: nothing to stop, nothing half up
        print(f"edgecloud up: port {', '.join(taken)} is in use. Stop what holds it, or pick free ports: "
              "make up ARGS=--random-ports (edgecloud up --random-ports)", file=sys.stderr)
        return 2
    model_dir = Path(args.model_dir).resolve()
    if not (model_dir / "model.json").exists():
        print(f"building the INT8 model into {model_dir} (first run only)", flush=True)
        from edge_agent.build.pipeline import build_model_dir

        build_model_dir(model_dir)
    generative = Path(getattr(args, "generative_model_dir", "") or "models/smollm2-135m-instruct").resolve()
    if not (generative / "model.json").exists():
        print(f"no generative model at {generative} (make model builds it): serving embeddings only", flush=True)
        generative = None
    images = Path(getattr(args, "image_model_dir", "") or "models/efficientnet-lite0").resolve()
    if not (images / "model.json").exists():
        print(f"no image model at {images} (make model builds it): serving no image classifier", flush=True)
        images = None
    workdir = Path(tempfile.mkdtemp(prefix="edgecloud-up-"))
    services = []
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        edge = launch("edge", edge_config(model_dir, ports["edge"], threads=0, http_port=ports["edge_http"],
                                          generative_model_dir=generative, image_model_dir=images), workdir)
        services.append(edge)
        workers = []
        if not args.no_cloud:
            cloud = launch("cloud", cloud_config(ports["cloud"], threads=None, metrics_port=ports["metrics"],
                                                 http_port=ports["cloud_http"], generative_model_dir=generative,
                                                 image=images is not None),
                           workdir)
            services.append(cloud)
            workers = [cloud.address]
        config = gateway_config(ports["grpc"], edge.address, workers, http_port=ports["http"],
                                metrics_port=ports["gateway_metrics"])
        redis_url = getattr(args, "redis_url", None) or "redis://127.0.0.1:6379"
        config["cache"] = {"enabled": True, "redis": {"url": redis_url}}
        host_port = redis_url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
        host, _, port = host_port.partition(":")
        if redis_reachable(host or "127.0.0.1", int(port or 6379)):
            cache_line = f"cache: Redis at {redis_url}"
        else:
            cache_line = (f"cache: no Redis answers at {redis_url}; using the in-process LRU cache "
                          "(the gateway switches to Redis if it appears)")
        print(cache_line, flush=True)
        gateway = launch("gateway", config, workdir)
        services.append(gateway)
        for service in services:
            print(f"waiting for {service.name} on {service.address} ...", flush=True)
            wait_ready(service, 180)
        print("\nedgecloud is up:")
        print(f"  gateway   grpc 127.0.0.1:{ports['grpc']}   http http://127.0.0.1:{ports['http']}"
              f"   metrics http://127.0.0.1:{ports['gateway_metrics']}/metrics")
        print(f"  edge      grpc {edge.address}   http http://127.0.0.1:{ports['edge_http']}"
              f"   (INT8 ONNX Runtime{', INT4 onnxruntime-genai' if generative else ''})")
        if workers:
            print(f"  cloud     grpc {workers[0]}   http http://127.0.0.1:{ports['cloud_http']}"
                  f"   metrics http://127.0.0.1:{ports['metrics']}/metrics")
        print(f"  {cache_line}")
        print(f"  logs and configs: {workdir}")
        print(sample_calls(ports["grpc"], ports["http"]))
        if generative is not None:
            print(generation_calls(ports["http"], ports["edge_http"], ports["cloud_http"]))
        print(_smoke_call(ports["grpc"]), flush=True)
        if generative is not None:
            print(_generation_smoke(ports["http"]), flush=True)
        if images is not None:
            print(_image_smoke(ports["grpc"]), flush=True)
        if args.exit_after_ready:
            return 0
        print("\nCtrl-C stops everything.", flush=True)
        while not stop.wait(0.5):
            for service in services:
                if not service.alive():
                    print(f"{service.name} exited ({service.proc.returncode}); stopping", file=sys.stderr)
                    print(service.log_tail(), file=sys.stderr)
                    return 1
        return 0
    finally:
        for service in reversed(services):
            service.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("stopped", flush=True)
