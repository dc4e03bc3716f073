"""The fake vLLM's rank rendezvous: a rank counts as joined only while the process that joined is running, and
only in the store of the running rank 0; records an earlier run left behind never count."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

from sparksim import fake_vllm

JOIN_THEN_EXIT = (
    "import sys, time; from sparksim import fake_vllm; fake_vllm._join(sys.argv[1], 1); time.sleep(float(sys.argv[2]))"
)


def test_a_rank_counts_while_its_process_runs_and_not_once_it_is_a_zombie(tmp_path):
    store = fake_vllm._open_store(SimpleNamespace(root=str(tmp_path)), "10.0.0.1", "29501")
    assert not fake_vllm._rank_alive(store, 1)
    child = subprocess.Popen([sys.executable, "-c", JOIN_THEN_EXIT, store, "0.5"])
    try:
        deadline = time.monotonic() + 10
        while not fake_vllm._rank_alive(store, 1):
            assert time.monotonic() < deadline, "the child never joined"
            time.sleep(0.02)
        # The child exits and is not reaped: a zombie still answers kill(pid, 0), but it has not joined any more.
        deadline = time.monotonic() + 10
        while fake_vllm._process_identity(child.pid) is not None:
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.02)
        os.kill(child.pid, 0)
        assert not fake_vllm._rank_alive(store, 1)
    finally:
        child.wait()


def test_a_worker_never_joins_a_store_whose_rank_0_is_gone(tmp_path):
    node = SimpleNamespace(root=str(tmp_path))
    owner = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from types import SimpleNamespace; from sparksim import fake_vllm; "
            "fake_vllm._open_store(SimpleNamespace(root=sys.argv[1]), '10.0.0.1', '29501')",
            str(tmp_path),
        ],
        check=True,
    )
    assert owner.returncode == 0
    found: list[str] = []
    waiter = threading.Thread(target=lambda: found.append(fake_vllm._find_store(node, "10.0.0.1", "29501", 1)))
    waiter.daemon = True
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive() and not found  # the earlier run's store: nobody listens there
    store = fake_vllm._open_store(node, "10.0.0.1", "29501")
    waiter.join(5)
    assert found == [store]
