"""Two threads of one process calling ``run_jobs`` share its fork server: when one thread's job
settles, its clean-up of the server's other children (what a job started in a session of its
own, ``runner._end_orphans``) must spare the workers the other thread is running. It spared only
its own call's workers, so the other thread's running job was killed ("WorkerDied") as an orphan."""

from __future__ import annotations

import threading
import time

from reconcile.runner import Job, run_jobs

SHAPE = (1, 3, 8, 8)


def test_one_threads_clean_up_spares_the_others_workers():
    results = {}

    def run(key: str, model: str) -> None:
        results[key] = run_jobs([Job(model, "thop", input_shape=SHAPE)], timeout=120, workers=1)[0]

    # slow: its forward sleeps 8 s on CPU, so its worker is running while the other thread's settle
    slow = threading.Thread(target=run, args=("slow", "tests.fault_models:slow"))
    slow.start()
    time.sleep(3)  # the fork server is up and the slow job's worker started (its import waits for it)
    for model in ("tests.fault_models:good", "tests.fault_models:child_in_new_session"):
        run(model, model)  # each settles (and cleans up the server's children) while slow runs
    slow.join()
    # conv 3->4 k3 on 8x8: 144 outputs x 27 = 3,888 MACs, for all three
    assert {k: (r.status, r.error_type, r.headline.get("macs")) for k, r in results.items()} == {
        k: ("ok", "", 3888) for k in ("slow", "tests.fault_models:good", "tests.fault_models:child_in_new_session")}


def test_two_threads_starting_workers_leave_stdout_as_it_was():
    """Each run_jobs points fds 1 and 2 at /dev/null while the fork server starts, and puts them
    back: two threads doing it at once interleaved the saves, and fd 1 stayed on /dev/null, so
    the caller's own print after the runs was lost (stdout '' on a pipe)."""
    import os
    import subprocess
    import sys

    from tests.fault_models import ROOT

    code = ("import threading\nfrom reconcile.runner import Job, run_jobs\nout = {}\n"
            "def go(k):\n    out[k] = run_jobs([Job('tests.fault_models:good', 'thop', input_shape=(1, 3, 8, 8))], "
            "timeout=120)\n"
            "ts = [threading.Thread(target=go, args=(k,)) for k in range(2)]\n[t.start() for t in ts]\n"
            "[t.join() for t in ts]\nprint(sorted((k, r.status) for k, v in out.items() for r in v))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stdout, done.stderr) == (0, "[(0, 'ok'), (1, 'ok')]\n", "")
