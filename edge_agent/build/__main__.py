"""``python -m edge_agent.build [--out DIR] [--force] ...``: the same as ``edgecloud model build``."""

import argparse
import sys

from edge_agent.build.pipeline import add_arguments, run

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m edge_agent.build", description=__doc__)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
