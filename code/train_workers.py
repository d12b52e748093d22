"""Trains with several model_trainer.py workers on this machine, as on a cluster.

Starts N worker processes on free 127.0.0.1 ports, each with the TF_CONFIG a
cluster would give it (worker 0 is the chief), prefixes their output with
`[worker N]`, and exits with the chief's status. Every flag other than
--workers goes to model_trainer.py unchanged (see `model_trainer.py --help`);
its --batch-size is per worker. Ctrl-C, or the chief failing, stops them all.

On a real cluster, set TF_CONFIG on each machine (or let Kubeflow's TFJob
operator set it) and run model_trainer.py itself.

Typical usage:

    python train_workers.py --workers 2
    python train_workers.py --workers 2 --epochs 1 --limit 2000 --output /tmp/two.h5 --no-figures
"""

import argparse
import sys

import model_trainer

from mnist_serving import cli, config, local_cluster

# Workers on one machine: more than a few only share the same cores.
MAX_WORKERS = 16


def parse_arguments(argv=None):
    """Returns (the launcher's arguments, the trainer's arguments)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\nTypical usage")[0],
        epilog="Other flags are model_trainer.py's.",
        formatter_class=cli.HelpFormatter,
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes to start")
    arguments, trainer_arguments = parser.parse_known_args(argv)
    if not 1 <= arguments.workers <= MAX_WORKERS:
        parser.error(f"--workers must be between 1 and {MAX_WORKERS}, got {arguments.workers}")
    # The trainer's flags are checked once, here, rather than by every worker.
    model_trainer.parse_arguments(trainer_arguments)
    return arguments, trainer_arguments


def main(argv=None):
    arguments, trainer_arguments = parse_arguments(argv)
    command = [sys.executable, str(config.CODE_DIR / "model_trainer.py"), *trainer_arguments]
    status = local_cluster.run(command, arguments.workers)
    if status == local_cluster.INTERRUPTED:
        print("train_workers.py: interrupted; the workers were stopped", file=sys.stderr)
    sys.exit(status)


if __name__ == "__main__":
    main()
