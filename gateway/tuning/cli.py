"""``edgecloud tune``: record a latency trace, replay candidate routing settings, recommend one.

    edgecloud tune record --gateway-http URL --duration S --out trace.json
    edgecloud tune recommend --trace trace.json --goal "p99<=250" [--yaml F] [--plot F] [grid options]
    edgecloud tune recommend --gateway-http URL --duration S --goal "p99<=250"   (record, then recommend)
    edgecloud tune confidence --edge ADDR --cloud ADDR --sample 600   (a classifier's min_confidence)

Contract: ``add_arguments(parser)`` adds the ``record``, ``recommend`` and ``confidence``
(``gateway.tuning.confidence``) subcommands to the
``tune`` parser; ``run(args)`` executes one and returns the exit status: 0 done (a goal met), 2 no
candidate meets the goal (the closest is still reported and written), 1 unusable input (trace,
goal, grid values, an unreachable gateway), with the reason on stderr. A bad ``--config`` raises
``edgecloud.config.ConfigError`` for the caller to report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

from edgecloud.config import ConfigError
from gateway.config import RoutingSettings, load_gateway_config
from gateway.tuning import confidence
from gateway.tuning.goal import Goal, GoalError
from gateway.tuning.plot import PlotUnavailable, write_plot
from gateway.tuning.record import RecordError, record_trace
from gateway.tuning.report import candidates_table, results_json, summary_line, yaml_snippet
from gateway.tuning.search import CandidateGrid, GridError, default_grid, describe, evaluate, recommend
from gateway.tuning.simulator import simulate
from gateway.tuning.trace import Trace, TraceError
from gateway.tuning.workload import Workload, probe_interval_ms

__all__ = ["add_arguments", "run"]

EXIT_OK, EXIT_INPUT, EXIT_GOAL_NOT_MET = 0, 1, 2


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated numbers") from None


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers") from None


def _hedges(text: str) -> tuple[float | str, ...]:
    out: list[float | str] = []
    for value in (v.strip() for v in text.split(",") if v.strip()):
        if value in ("threshold", "off"):
            out.append(value)
        else:
            try:
                out.append(float(value))
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"{value!r}: expected milliseconds, 'threshold' or 'off'") from None
    return tuple(out)


def _words(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _add_source(parser: argparse.ArgumentParser, *, trace_allowed: bool) -> None:
    parser.add_argument("--gateway-http", metavar="URL",
                        help="the gateway's HTTP front (http://host:port) to record from")
    parser.add_argument("--duration", type=float, default=60.0, metavar="S", help="seconds to record (default 60)")
    parser.add_argument("--poll-s", type=float, default=1.0, help="seconds between polls (default 1)")
    parser.add_argument("--kind", choices=("rtt", "ttft"), default="rtt",
                        help="rtt: request round trips (default); ttft: streams' time to first token (the "
                             "same threshold_ms routes streams)")
    parser.add_argument("--include-history", action="store_true",
                        help="also take the samples the gateway already holds (its last 100k)")
    if trace_allowed:
        parser.add_argument("--trace", metavar="FILE", help="a saved trace (from `tune record` or the endpoint)")
        parser.add_argument("--save-trace", metavar="FILE", help="with --gateway-http: also save what was recorded")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``record`` and ``recommend`` to the ``edgecloud tune`` parser."""
    commands = parser.add_subparsers(dest="tune_command", required=True)

    rec = commands.add_parser("record", help="record per-backend RTTs from a running gateway")
    _add_source(rec, trace_allowed=False)
    rec.add_argument("--out", required=True, metavar="FILE", help="where to write the trace (JSON)")

    best = commands.add_parser("recommend", help="replay candidate settings on a trace and recommend some",
                               formatter_class=argparse.RawDescriptionHelpFormatter,
                               epilog="Lists are comma-separated; unset grid options use a grid derived from "
                                      "the trace\n(see docs/tuning.md).")
    _add_source(best, trace_allowed=True)
    best.add_argument("--goal", required=True,
                      help='constraints, e.g. "p99<=250" or "p99<=250,p50<=40" (ms): the edge share is '
                           'maximised subject to them')
    best.add_argument("--max-hedge-rate", type=float, default=0.05, metavar="FRACTION",
                      help="at most this share of requests hedged (default 0.05; 1 = no limit); "
                           "a hedge_rate term in --goal overrides it")
    best.add_argument("--share-tolerance", type=float, default=0.005, metavar="FRACTION",
                      help="edge shares this close count as tied, then fewer switches win (default 0.005)")
    best.add_argument("--robustness", type=float, default=0.1, metavar="FRACTION",
                      help="the recommendation must also meet the goal with every edge RTT 1-r and 1+r times "
                           "the recorded one, and is ranked by its worst edge share (default 0.1; 0 = off)")
    best.add_argument("--config", metavar="FILE",
                      help="the gateway's config: every routing setting not tuned comes from it")
    best.add_argument("--thresholds", type=_floats, metavar="MS,...", help="threshold_ms values to try")
    best.add_argument("--hedge-after", type=_hedges, metavar="MS|threshold|off,...",
                      help="hedge_after_ms values to try")
    best.add_argument("--recover-ratios", type=_floats, metavar="R,...", help="recover_ratio values to try")
    best.add_argument("--recover-probes", type=_ints, metavar="N,...", help="recover_probes values to try")
    best.add_argument("--statistics", type=_words, metavar="NAME,...", help="statistic values to try (p95, ewma, ...)")
    best.add_argument("--windows-ms", type=_floats, metavar="MS,...", help="window_ms values to try")
    best.add_argument("--rate", type=float, metavar="RPS",
                      help="replay evenly spaced arrivals at this rate instead of the trace's own")
    best.add_argument("--overhead-ms", type=float, default=0.0,
                      help="gateway overhead added to every simulated latency (default 0)")
    best.add_argument("--yaml", default="tune-routing.yaml", metavar="FILE",
                      help="where to write the routing: snippet (default tune-routing.yaml; '-' for none)")
    best.add_argument("--plot", default="tune.png", metavar="FILE",
                      help="where to write the PNG (default tune.png; '-' for none)")
    best.add_argument("--json", metavar="FILE", help="also write every candidate's figures as JSON")
    best.add_argument("--top", type=int, default=30, help="table rows to print (default 30; 0 for all)")

    bar = commands.add_parser("confidence", help="recommend a classifier's min_confidence (confidence escalation) "
                                                 "from images or a trace of edge and cloud answers")
    confidence.add_arguments(bar)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        if args.tune_command == "record":
            return _record(args, out)
        if args.tune_command == "confidence":
            return confidence.run(args, out)
        return _recommend(args, out)
    except ConfigError:
        raise  # the edgecloud command reports config errors by field path, as for every subcommand
    except (TraceError, GoalError, GridError, RecordError, ValueError) as exc:
        print(f"edgecloud tune: {exc}", file=sys.stderr)
        return EXIT_INPUT


def _recorded(args: argparse.Namespace, out: TextIO) -> Trace:
    if not args.gateway_http:
        raise RecordError("give --gateway-http URL to record from" +
                          (" or --trace FILE" if hasattr(args, "trace") else ""))
    what = "time-to-first-token" if args.kind == "ttft" else "round-trip"
    print(f"recording {args.gateway_http}'s {what} samples for {args.duration:g} s ...", file=out, flush=True)
    trace = record_trace(args.gateway_http, args.duration, poll_s=args.poll_s, include_history=args.include_history,
                         kind=args.kind)
    print(f"recorded {len(trace.samples)} samples over {trace.duration_s:.1f} s", file=out)
    return trace


def _record(args: argparse.Namespace, out: TextIO) -> int:
    trace = _recorded(args, out)
    trace.save(args.out)
    print(f"wrote {args.out}", file=out)
    return EXIT_OK


def _base_settings(args: argparse.Namespace, trace: Trace, out: TextIO) -> RoutingSettings:
    if args.config:
        routing = load_gateway_config(args.config).routing
        print(f"base settings: routing of {args.config}", file=out)
        return routing
    interval = probe_interval_ms(trace)
    if interval is None:
        print("base settings: gateway defaults", file=out)
        return RoutingSettings()
    print(f"base settings: gateway defaults, probe_interval_ms {interval:g} (as the trace shows)", file=out)
    return RoutingSettings(probe_interval_ms=interval)


def _grid(args: argparse.Namespace, workload: Workload, goal: Goal, base: RoutingSettings,
          trace: Trace) -> CandidateGrid:
    derived = default_grid(workload, goal, base, recorded_threshold_ms=trace.recorded_threshold_ms)
    return CandidateGrid(args.thresholds or derived.thresholds_ms, args.hedge_after or derived.hedge_after,
                         args.recover_ratios or derived.recover_ratios, args.recover_probes or derived.recover_probes,
                         args.statistics or derived.statistics, args.windows_ms or derived.windows_ms)


def _recommend(args: argparse.Namespace, out: TextIO) -> int:
    goal = Goal.parse(args.goal, max_hedge_rate=None if args.max_hedge_rate >= 1 else args.max_hedge_rate,
                      share_tolerance=args.share_tolerance)
    if args.trace:
        trace = Trace.load(args.trace)
        source = args.trace
    else:
        trace = _recorded(args, out)
        source = args.gateway_http
        if args.save_trace:
            trace.save(args.save_trace)
            print(f"wrote {args.save_trace}", file=out)
    workload = Workload.from_trace(trace, rate=args.rate)
    if not workload.arrivals:
        raise TraceError("the trace holds no requests, only probes (it was recorded while no traffic ran): "
                         "record under the load you tune for, or replay the probes' RTTs at a request rate "
                         "with --rate N")
    print(f"trace: {source}: {'streams, time to first token; ' if trace.kind == 'ttft' else ''}"
          f"{trace.duration_s:.1f} s, {len(workload.arrivals)} requests "
          f"({workload.rate:.1f}/s), {len(workload.edge)} edge RTTs ({workload.censored} cancelled hedge losers "
          f"left out), {len(workload.cloud)} cloud RTTs", file=out)
    base = _base_settings(args, trace, out)
    slowest_edge_ms = max(workload.edge.rtts_s, default=0.0) * 1000.0
    if slowest_edge_ms <= base.threshold_ms:
        print(f"warning: the trace holds no slow period to learn from (slowest edge RTT {slowest_edge_ms:.0f} ms, "
              f"threshold {base.threshold_ms:g} ms): every threshold above it behaves alike here, and the current "
              "setting is kept where the figures tie; record while the edge is slow to tune for it", file=out)
    grid = _grid(args, workload, goal, base, trace)
    print(f"goal: {goal}; simulating {len(grid)} candidates ...", file=out, flush=True)
    evaluations = evaluate(workload, grid, goal, base, robustness=args.robustness, overhead_ms=args.overhead_ms)
    recommendation = recommend(evaluations, goal, current=base)
    best = recommendation.best
    print(candidates_table(recommendation, top=args.top or None), file=out)
    verdict = "recommended" if recommendation.met else "NO candidate meets the goal; closest"
    print(f"\n{verdict}: {describe(best.settings)}\n  simulated: {summary_line(best.summary)}", file=out)
    snippet = yaml_snippet(best.settings, best.summary, goal, met=recommendation.met, source=source)
    if args.yaml != "-":
        Path(args.yaml).write_text(snippet)
        print(f"wrote {args.yaml}", file=out)
    if args.json:
        Path(args.json).write_text(json.dumps(results_json(recommendation, goal), indent=1) + "\n")
        print(f"wrote {args.json}", file=out)
    if args.plot != "-":
        try:
            replay = simulate(workload, best.settings, overhead_ms=args.overhead_ms)
            write_plot(args.plot, workload, recommendation, replay, goal)
            print(f"wrote {args.plot}", file=out)
        except PlotUnavailable as exc:
            print(f"no plot: {exc}", file=out)
    print("\n" + snippet, file=out, end="")
    return EXIT_OK if recommendation.met else EXIT_GOAL_NOT_MET
