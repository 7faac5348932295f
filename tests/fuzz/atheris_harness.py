"""Coverage-guided fuzzing of the request path with atheris (libFuzzer for Python), outside CI.

    python tests/fuzz/atheris_harness.py -atheris_runs=100000
    python tests/fuzz/atheris_harness.py -max_total_time=600 -artifact_prefix=/tmp/edgecloud-fuzz/ CORPUS_DIR

What runs: ``tests.fuzz.fuzz_targets.one_input`` — protobuf parse, gRPC decode, REST decode (JSON
and binary), validation and the gateway's cache key, with the edgecloud packages instrumented for
coverage. Any exception it lets out is a finding: libFuzzer stops and writes the input to
``<artifact_prefix>crash-<sha1>``. Keep such an input as
``tests/fuzz/regressions/<what-it-broke>.bin`` (``test_regressions.py`` replays every file there),
fix the product, and the replay keeps it fixed.

Findings already reported (``KnownFinding``, each pinned by an xfail in the replay) are skipped so
a run goes on to the next one; ``EDGECLOUD_FUZZ_REPORT_KNOWN=1`` reports them too.

Without a corpus directory the run starts from built-in seeds (valid inputs for every target, which
get the fuzzer past protobuf's wire format at once), copied to a fresh temporary directory that then
collects the run's corpus; pass that directory to the next run to go on where this one stopped.
``-rss_limit_mb`` defaults to 1024: an input that makes a decoder allocate past that is an
out-of-memory finding (the replay's ``tracemalloc`` bound, 32 MiB per input, is the finer check).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import atheris

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

with atheris.instrument_imports(include=["edgecloud", "gateway", "tests.fuzz"]):
    from tests.fuzz.fuzz_targets import KnownFinding, one_input
    from tests.fuzz.seeds import seed_inputs

REPORT_KNOWN = os.environ.get("EDGECLOUD_FUZZ_REPORT_KNOWN") == "1"


def test_one_input(data: bytes) -> None:
    try:
        one_input(data)
    except KnownFinding:
        if REPORT_KNOWN:
            raise


def _with_defaults(argv: list[str]) -> list[str]:
    args = list(argv)
    if not any(arg.startswith("-rss_limit_mb") for arg in args[1:]):
        args.append("-rss_limit_mb=1024")
    if not any(not arg.startswith("-") for arg in args[1:]):  # no corpus directory: start from the seeds
        seeds = Path(tempfile.mkdtemp(prefix="edgecloud-fuzz-seeds-"))
        for index, seed in enumerate(seed_inputs()):
            (seeds / f"seed-{index:03d}").write_bytes(seed)
        args.append(str(seeds))
    return args


def main() -> None:
    os.environ.setdefault("PYTHONHASHSEED", "0")
    atheris.Setup(_with_defaults(sys.argv), test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
