"""The recipe's time on encoded photos, best of several rounds: shared by
photo_bench.py's timing line and preprocessing_speed.py's child processes,
which import it beside another checkout's code, so it imports nothing of the
project."""

import math
import time


def best_times(encoded, decode, to_mnist, rounds):
    """Seconds per photo to `decode` the `encoded` photos and to run `to_mnist`
    on the decoded images, each the best of `rounds` rounds (other jobs on the
    machine slow some rounds, never speed one up)."""
    decoded = [decode(photo) for photo in encoded]
    best_decoding = best_recipe = math.inf
    for _ in range(rounds):
        start = time.perf_counter()
        for photo in encoded:
            decode(photo)
        best_decoding = min(best_decoding, time.perf_counter() - start)
        start = time.perf_counter()
        for image in decoded:
            to_mnist(image)
        best_recipe = min(best_recipe, time.perf_counter() - start)
    return best_decoding / len(encoded), best_recipe / len(encoded)
