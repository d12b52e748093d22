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

import cv2
import numpy as np

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR / "code"))
sys.path.insert(0, str(PROJECT_DIR / "bench"))

# Found through the paths above.
import photo_bench  # noqa: E402

from mnist_serving import cli, data  # noqa: E402

# Run in the child process: times decoding and the recipe of one checkout.
TIMER = """
import json, math, sys, time
import cv2, numpy as np
sys.path.insert(0, sys.argv[1])
from mnist_serving import preprocessing
archive = np.load(sys.argv[2])
encoded = [archive[name].tobytes() for name in sorted(archive.files)]
decoded = [cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_UNCHANGED) for photo in encoded]
best_decoding = best_recipe = math.inf
for _ in range(int(sys.argv[3])):
    start = time.perf_counter()
    for photo in encoded:
        cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_UNCHANGED)
    best_decoding = min(best_decoding, time.perf_counter() - start)
    start = time.perf_counter()
    for image in decoded:
        preprocessing.to_mnist(image)
    best_recipe = min(best_recipe, time.perf_counter() - start)
print(json.dumps([best_decoding / len(encoded), best_recipe / len(encoded)]))
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


def draw_photos(count, seed):
    """JPEG bytes of `count` 1-megapixel photos of MNIST test digits."""
    (_, _), (test_images, _) = data.load_mnist()
    rng = np.random.default_rng([seed, 1])
    encoded = []
    for digit in test_images[:count]:
        photo = photo_bench.draw_photo(digit, photo_bench.one_megapixel_spec(rng), rng)
        encoded.append(cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 85])[1])
    return encoded


def time_checkout(code, archive, rounds):
    """(seconds to decode, seconds of the recipe) per photo, best of `rounds`."""
    result = subprocess.run(
        [sys.executable, "-c", TIMER, str(code), str(archive), str(rounds)],
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
        photos = draw_photos(arguments.photos, arguments.seed)
        np.savez(archive, **{f"{index:05d}": photo for index, photo in enumerate(photos)})
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
