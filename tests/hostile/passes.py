"""The whole hostile corpus, many passes, against one stack: wrong answers, leaks, and each server's
resident memory after every pass (does memory come back after large payloads?).

    .venv/bin/python -m tests.hostile.passes [--passes 10]

Prints a table a pass and writes bench/results/hostile_passes.json. The pytest corpus
(``test_corpus.py``) runs one pass and checks every answer; this measures what repeating it does.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.common import machine_facts, print_table, write_result
from tests.conftest import MODEL_DIR
from tests.hostile.corpus import CASES
from tests.hostile.servers import leaks_in, memory
from tests.hostile.test_corpus import running_stack

MIB = 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passes", type=int, default=10)
    args = parser.parse_args()
    rows = []
    with running_stack(MODEL_DIR, Path(tempfile.mkdtemp(prefix="hostile-passes-"))) as stack:
        pids = stack.pids()
        start = {name: memory(pid)["VmRSS"] for name, pid in pids.items()}
        for number in range(1, args.passes + 1):
            cases = leaked = 0
            wrong: list[str] = []
            for case in CASES:
                for target_name in case.targets():
                    answer = stack.targets[target_name].send(case.build(), case)
                    cases += 1
                    if answer.status != case.status:
                        wrong.append(f"{target_name} {case.name}: {answer.status} {answer.message[:80]!r}")
                    leaked += bool(leaks_in(answer.message))
            unexpected = stack.unexpected()
            rss = {name: memory(pid)["VmRSS"] for name, pid in pids.items()}
            for line in wrong:
                print("  wrong:", line)
            rows.append({"pass": number, "cases": cases, "wrong_status": len(wrong), "leaks": leaked,
                         "unexpected_log_lines": len(unexpected),
                         **{f"{name}_rss_mib": rss[name] / MIB for name in pids}})
            print_table(rows[-1:], f"pass {number}")
        alive = all(service.alive() for service in stack.services.values())
        still = {name: target.good() for name, target in stack.targets.items()}
    first = rows[0]
    growth = {name: rows[-1][f"{name}_rss_mib"] - first[f"{name}_rss_mib"] for name in pids}
    print_table(rows, f"{args.passes} passes of {len(CASES)} cases")
    print_table([{"process": name, "rss_at_start_mib": start[name] / MIB, "after_pass_1_mib": first[f"{name}_rss_mib"],
                  f"after_pass_{args.passes}_mib": rows[-1][f"{name}_rss_mib"], "growth_after_pass_1_mib": growth[name]}
                 for name in pids], "resident memory")
    path = write_result("hostile_passes", {"machine": machine_facts(), "passes": rows,
                                           "growth_after_first_pass_mib": growth, "servers_alive": alive,
                                           "good_request_after": {k: v is None for k, v in still.items()}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
