"""Swap scenarios run in a fresh process against a scratch database (see tests/coordination/scratch.py).

`python -m tests.swaps.scenarios NAME '<json params>'` prints a JSON result on its last line.
"""

from __future__ import annotations

import json
import sys
import threading

import django


def race(*, threads: int, rounds: int) -> dict:
    """`threads` simultaneous real swap requests per round: how many were accepted, refused, or errored."""
    from django.db import close_old_connections

    from catalog.models import ModelEntry
    from swaps.models import Swap, SwapState
    from swaps.services import SwapRefused, swap_finish, swap_request

    ModelEntry.objects.get_or_create(key="race", defaults={"name": "race", "repo": "sim/tiny-model"})
    results = []
    for _ in range(rounds):
        barrier = threading.Barrier(threads)
        outcome: list[str] = []

        def request(barrier: threading.Barrier = barrier, outcome: list[str] = outcome) -> None:
            barrier.wait()
            try:
                swap_request(model_key="race", dry_run=False, actor="race")
                outcome.append("202")
            except SwapRefused as exc:
                outcome.append(str(exc.status))
            except Exception as exc:  # noqa: BLE001 - any other error is what the test looks for
                outcome.append(f"error: {type(exc).__name__}: {exc}")
            finally:
                close_old_connections()

        workers = [threading.Thread(target=request) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        results.append(sorted(outcome))
        for swap in Swap.objects.filter(active=True):
            swap_finish(swap=swap, state=SwapState.CANCELLED, message="race round over")
    return {"rounds": results, "active": Swap.objects.filter(active=True).count()}


if __name__ == "__main__":
    django.setup()
    name, params = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps({"race": race}[name](**params)))
