"""The recipe's time on 1-megapixel photos, against another checkout's recipe.

Draws JPEG photos of MNIST test digits as `photo_bench.py`'s timing line does
(1155x866, the digit 10% to 70% of the height, paper, ink, light falling to
70%, blur, noise), then times, in a fresh process per checkout and turn,
decoding them (OpenCV) and `preprocessing.to_mnist` on the decoded images.
The turns alternate between the checkouts and each figure is the best of its
rounds, so that other jobs on the machine weigh on both alike; the recipe is
printed as milliseconds and as a multiple of the decoding time, and the last
line compares the two recipes' best times.

Typical usage (the checkout before a change as a worktree):
    git worktree add --detach /tmp/before13 f429b15^1
    python bench/preprocessing_speed.py --before /tmp/before13/code
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

PROJECT_DIR = Path(__file__).resolve().parent.parent
BENCH_DIR = PROJECT_DIR / "bench"
sys.path.insert(0, str(PROJECT_DIR / "code"))
sys.path.insert(0, str(BENCH_DIR))

# Found through the paths above.
import photo_bench  # noqa: E402

from mnist_serving import cli, data  # noqa: E402

# Run in the child process, beside the checkout's code: its recipe, timed by
# recipe_timing (which imports nothing of the project), and decoding by
# OpenCV, the same for every checkout.
TIMER = """
import json, sys
import cv2, numpy as np
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from mnist_serving import preprocessing
from recipe_timing import best_times
archive = np.load(sys.argv[3])
encoded = [archive[f"arr_{index}"] for index in range(len(archive.files))]
decode = lambda photo: cv2.imdecode(photo, cv2.IMREAD_UNCHANGED)
print(json.dumps(best_times(encoded, decode, preprocessing.to_mnist, int(sys.argv[4]))))
"""


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=cli.HelpFormatter
    )
    parser.add_argument(
        "--before", type=Path, help="another checkout's code/ folder to compare with"
    )
    parser.add_argument("--photos", type=int, default=30, help="1-megapixel photos to time")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per turn (best counts)")
    parser.add_argument("--turns", type=int, default=3, help="alternating turns per checkout")
    parser.add_argument("--seed", type=int, default=0, help="seed of the drawings")
    arguments = parser.parse_args(argv)
    if arguments.before is not None and not (arguments.before / "mnist_serving").is_dir():
        parser.error(f"--before: no mnist_serving package in {arguments.before}")
    for name in ("photos", "rounds", "turns"):
        if getattr(arguments, name) < 1:
            parser.error(f"--{name} must be a positive integer")
    return arguments


def time_checkout(code, archive, rounds):
    """(seconds to decode, seconds of the recipe) per photo, best of `rounds`."""
    result = subprocess.run(
        [sys.executable, "-c", TIMER, str(code), str(BENCH_DIR), str(archive), str(rounds)],
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )
    if result.returncode != 0:
        sys.exit(f"preprocessing_speed.py: error: timing {code} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout)


def main(argv=None):
    arguments = parse_arguments(argv)
    checkouts = {"this checkout": PROJECT_DIR / "code"}
    if arguments.before is not None:
        checkouts["before"] = arguments.before.resolve()
    best = {name: [np.inf, np.inf] for name in checkouts}
    with tempfile.TemporaryDirectory() as folder:
        archive = Path(folder) / "photos.npz"
        (_, _), (test_images, _) = data.load_mnist()
        jpegs = photo_bench.one_megapixel_jpegs(test_images[: arguments.photos], arguments.seed)
        np.savez(archive, *(np.frombuffer(jpeg, np.uint8) for jpeg in jpegs))
        for _ in range(arguments.turns):
            for name, code in checkouts.items():
                decoding, recipe = time_checkout(code, archive, arguments.rounds)
                best[name] = [min(best[name][0], decoding), min(best[name][1], recipe)]
    print(
        f"{arguments.photos} 1-megapixel JPEG photos, best of {arguments.turns} turns x "
        f"{arguments.rounds} rounds"
    )
    print(f"{'checkout':<15}{'decoding ms':>12}{'recipe ms':>11}{'recipe / decoding':>19}")
    for name, (decoding, recipe) in best.items():
        print(f"{name:<15}{decoding * 1e3:>12.2f}{recipe * 1e3:>11.2f}{recipe / decoding:>19.2f}")
    if arguments.before is not None:
        # The best times of alternating turns, compared directly: a turn
        # slowed by other jobs does not count, for either checkout.
        ratio = best["this checkout"][1] / best["before"][1]
        print(f"this checkout's recipe takes {ratio:.2f} times as long as before's")


if __name__ == "__main__":
    main()
