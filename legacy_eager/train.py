"""Train DavidNet with the seed's recipe: `python -m legacy_eager.train [FLAGS]`.

Writes into --out: config.json (at the start), metrics.jsonl (a line per epoch),
checkpoints/ (model, optimizer, global step; one per epoch, last 3 kept), tensorboard/
(event files), curves.png (redrawn each epoch) and summary.json (at the end). Flags and data are checked before TensorFlow is imported,
so a mistake costs a second, not a TensorFlow start-up.
"""
import sys

from legacy_eager.config import parse_args, parser
from legacy_eager.errors import run_cli
from legacy_eager.run import run


def main(argv=None):
    return run_cli(lambda: run(parse_args(argv, parser())))


if __name__ == "__main__":
    sys.exit(main())
