"""The ``edgecloud`` command.

    edgecloud model build [--out DIR] [--force]     build the INT8 reference model directory
    edgecloud model build --model smollm2           build the generative model (edge INT4, cloud FP32)
    edgecloud model build --model efficientnet      build the image classifier (edge static INT8, cloud FP32)
    edgecloud model pack --out DIR [--variant V]    one variant only: the directory a device carries
    edgecloud serve edge|cloud|gateway --config F   run one server until SIGINT/SIGTERM
                                                   (gateway: --processes N for N processes on one port)
    edgecloud up                                    build what is missing, run the local stack
    edgecloud config check FILE [--kind KIND]       validate a config file (kind inferred) and explain errors
    edgecloud --version

Each subcommand imports only what it needs, so an edge-only install (no torch) can run
``serve edge`` and ``config check``.
"""

from __future__ import annotations

import argparse
import sys

from edgecloud.config import ConfigError

CONFIG_KINDS = ("edge", "cloud", "gateway")


def _config_model(kind: str):
    if kind == "edge":
        from edge_agent.config import EdgeConfig

        return EdgeConfig, "EDGECLOUD_EDGE_"
    if kind == "cloud":
        from cloud_worker.config import CloudConfig

        return CloudConfig, "EDGECLOUD_CLOUD_"
    if kind == "gateway":
        from gateway.config import GatewayConfig

        return GatewayConfig, "EDGECLOUD_GATEWAY_"
    raise ValueError(kind)


def _model_build(args) -> int:
    if args.model == "smollm2":
        from edge_agent.build import generative

        return generative.run(args)
    if args.model == "efficientnet":
        from edge_agent.build import image

        return image.run(args)
    from edge_agent.build import pipeline

    if args.out is None:
        args.out = pipeline.DEFAULT_OUT
    return pipeline.run(args)


def _model_pack(args) -> int:
    from edge_agent.model_dir import ModelDirError, pack_variant

    try:
        out = pack_variant(args.model_dir, args.out, args.variant)
    except ModelDirError as exc:
        print(f"edgecloud model pack: {exc}", file=sys.stderr)
        return 2
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    print(f"wrote {out} ({size:.1f} MiB): serve it with an edge-only install (pip install 'edgecloud[edge]')")
    return 0


def _serve(args) -> int:
    if args.component == "edge":
        from edge_agent.main import run
    elif args.component == "gateway":
        from gateway.main import run

        return run(args.config, processes=args.processes, worker_index=args.worker_index)
    else:
        from cloud_worker.main import run
    return run(args.config)


def _up(args) -> int:
    from edgecloud_tools.up import run

    return run(args)


def _tune(args) -> int:
    from gateway.tuning.cli import run

    return run(args)


def _demo(args) -> int:
    from edgecloud_tools.demo import run

    return run(args)


SECTIONS_OF_KIND = {
    "edge": {"models"},
    "cloud": {"runtime", "batching"},
    "gateway": {"edge", "cloud", "routing", "cache", "auth", "reload_poll_ms"},
}
"""Top-level sections only one kind of config has: how ``config check`` tells the kinds apart."""


def infer_kind(path: str) -> str | None:
    """The kind a config file looks like: by its sections, else by its name (``edge.yaml``)."""
    import yaml
    from pathlib import Path

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        data = None
    if isinstance(data, dict):
        matches = [kind for kind, sections in SECTIONS_OF_KIND.items() if sections & set(data)]
        if len(matches) == 1:
            return matches[0]
    stem = Path(path).stem.lower()
    named = [kind for kind in CONFIG_KINDS if kind in stem]
    return named[0] if len(named) == 1 else None


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _config_check(args) -> int:
    from edgecloud.config import load_config

    looks_like = infer_kind(args.file)
    kind = args.kind or looks_like
    if kind is None:
        print(f"{args.file}: cannot tell which kind of config this is; say --kind {{{','.join(CONFIG_KINDS)}}}",
              file=sys.stderr)
        return 2
    model, prefix = _config_model(kind)
    try:
        load_config(model, args.file, prefix)
    except ConfigError:
        if looks_like is not None and looks_like != kind:
            print(f"{args.file} looks like {_a(looks_like)} config, not {_a(kind)} one "
                  f"(try: edgecloud config check {args.file})", file=sys.stderr)
        raise
    print(f"{args.file}: valid {kind} configuration" + ("" if args.kind else " (kind inferred from the file)"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from edgecloud import __version__

    parser = argparse.ArgumentParser(prog="edgecloud", description="edge-cloud hybrid inference")
    parser.add_argument("--version", action="version", version=f"edgecloud {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    model = commands.add_parser("model", help="model build tooling").add_subparsers(dest="model_command", required=True)
    build = model.add_parser("build", help="build a reference model directory (edge and cloud) with its report")
    build.add_argument("--model", choices=("minilm", "smollm2", "efficientnet"), default="minilm",
                       help="minilm: the sentence-embedding model, INT8 (default); smollm2: the generative "
                            "model, onnxruntime-genai INT4 on the edge and torch in the cloud; efficientnet: the "
                            "image classifier, static INT8 on the edge and torch FP32 in the cloud")
    try:
        from edge_agent.build import generative, image, pipeline
    except ImportError:  # an edge-only install has no build tooling
        build.set_defaults(func=lambda _args: _missing("build", "edgecloud[build]"))
    else:
        pipeline.add_arguments(build)
        generative.add_arguments(build)
        image.add_arguments(build)
        build.set_defaults(func=_model_build)

    pack = model.add_parser("pack", help="a model directory with one variant only (what a device carries)")
    pack.add_argument("--model-dir", default="models/all-MiniLM-L6-v2", help="a built model directory")
    pack.add_argument("--variant", default=None, help="the variant to keep (default: the directory's default, int8)")
    pack.add_argument("--out", required=True, help="the new directory (must not exist or be empty)")
    pack.set_defaults(func=_model_pack)

    serve = commands.add_parser("serve", help="run a server")
    serve.add_argument("component", choices=["edge", "cloud", "gateway"])
    serve.add_argument("--config", default=None, help="YAML config file (defaults apply without one)")
    serve.add_argument("--processes", type=int, default=1,
                       help="gateway only: N processes on the same ports (SO_REUSEPORT), sharing nothing but "
                            "Redis; needs fixed server.port and server.metrics_port (metrics of all on that port)")
    serve.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    serve.set_defaults(func=_serve)

    up = commands.add_parser("up", help="build what is missing and run the local stack")
    up.add_argument("--model-dir", default="models/all-MiniLM-L6-v2")
    up.add_argument("--image-model-dir", default="models/efficientnet-lite0",
                    help="the image classifier the edge and the cloud also serve, when it is built")
    up.add_argument("--generative-model-dir", default="models/smollm2-135m-instruct",
                    help="the generative model the edge and the cloud also serve, when it is built")
    up.add_argument("--no-cloud", action="store_true", help="run the edge agent only")
    up.add_argument("--exit-after-ready", action="store_true", help="stop once everything answers (smoke test)")
    up.add_argument("--random-ports", action="store_true", help="pick free ports instead of 8000/8001/8101/8201")
    up.add_argument("--redis-url", default=None, help="Redis for the result cache (default redis://127.0.0.1:6379; "
                                                        "the in-process LRU when none answers)")
    up.set_defaults(func=_up)

    tune = commands.add_parser("tune", help="record a latency trace and recommend routing settings")
    try:
        from gateway.tuning import cli as tuning_cli  # needs the gateway extra (redis, aiohttp)
    except ImportError:
        tune.add_argument("rest", nargs=argparse.REMAINDER)
        tune.set_defaults(func=lambda _args: _missing("tune", "edgecloud[tune]"))
    else:
        tuning_cli.add_arguments(tune)
        tune.set_defaults(func=_tune)

    from edgecloud_tools import demo  # stdlib-only at import time

    demo_parser = commands.add_parser("demo", help="watch traffic move edge -> cloud -> edge, live")
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(func=_demo)

    proxy = commands.add_parser("proxy", help="a fault-injecting TCP proxy (SIGUSR1 slows, SIGUSR2 restores)",
                                add_help=False)
    proxy.add_argument("rest", nargs=argparse.REMAINDER)
    proxy.set_defaults(func=lambda args: __import__("edgecloud_tools.fault_proxy", fromlist=["main"]).main(args.rest))

    config = commands.add_parser("config", help="configuration tools").add_subparsers(dest="config_command",
                                                                                     required=True)
    check = config.add_parser("check", help="validate a config file")
    check.add_argument("file")
    check.add_argument("--kind", choices=CONFIG_KINDS, default=None,
                       help="which server the file configures (default: inferred from its sections or name)")
    check.set_defaults(func=_config_check)
    reference = config.add_parser("reference", help="print the configuration reference (Markdown)")
    reference.set_defaults(func=lambda _args: __import__("edgecloud_tools.config_reference", fromlist=["main"]).main())
    return parser


def _missing(what: str, extra: str) -> int:
    print(f"edgecloud {what} needs the {extra} extra: pip install '{extra}'", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except OSError as exc:  # a port in use, a file that cannot be read: the cause, in one line
        print(f"edgecloud {args.command}: cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
