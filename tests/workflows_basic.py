"""Workflows the end-to-end tests submit (shipped to pilots in the tests/ sandbox)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pilotwave as pw


@pw.job
def double(x: int) -> int:
    return 2 * x


@pw.job
def add(a: int, b: int) -> int:
    return a + b


@pw.job
def total(values: list[int]) -> int:
    return sum(values)


@pw.job
def count_to(n: int) -> list[int]:
    return list(range(n))


@pw.job
def mark(path: str, tag: str, value: int = 0, sleep_s: float = 0.0) -> int:
    """Append ``tag`` to a file shared with the test (which counts runs), then return ``value``."""
    time.sleep(sleep_s)
    with open(path, "a") as f:
        f.write(tag + "\n")
    return value


@pw.job(max_attempts=1)
def needs_file(path: str) -> int:
    if not Path(path).exists():
        raise FileNotFoundError(f"input {path} is missing")
    return int(Path(path).read_text())


@pw.job(max_attempts=1)
def explode(message: str) -> int:
    raise ValueError(message)


@pw.job
def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@pw.workflow
def diamond(x: int = 1) -> dict:
    a = double.submit(x)
    b = double.submit(a)  # futures as arguments: released by the server, no driver round trip
    c = add.submit(a, 10)
    d = add.submit(b, c)
    return {"d": d.result(), "seeded": pw.seed() > 0}


@pw.workflow
def branch(x: int) -> str:
    return "big" if double.submit(x).result() > 10 else "small"


@pw.workflow
def loop(target: int) -> dict:
    value, rounds = 1, 0
    while value < target:
        value = double.submit(value).result()
        rounds += 1
    return {"value": value, "rounds": rounds}


@pw.workflow
def fan_out(n: int) -> dict:
    items = count_to.submit(n).result()
    squares = double.map(items)
    first = [f.result() for f in pw.as_completed(squares)]
    return {"total": total.submit([f for f in squares]).result(), "seen": sorted(first)}


@pw.workflow
def child(x: int) -> int:
    return add.submit(x, 1).result()


@pw.workflow
def polymorphic(x: int) -> dict:
    py = double.submit(x)
    sh = pw.shell(["sh", "-c", f"echo shell says {x}"])
    nested = child.submit(x=x)
    both = add.submit(py, nested)  # a nested workflow's result passed on as a future
    return {
        "python": py.result(),
        "shell": sh.result()["stdout_tail"].strip(),
        "nested": nested.result(),
        "both": both.result(),
    }


@pw.workflow
def takes_functions(fn: pw.JobFunction, flow: pw.WorkflowFunction, x: int) -> list[int]:
    return [fn.submit(x).result(), flow.submit(x=x).result()]


@pw.workflow
def fails(message: str) -> int:
    a = double.submit(1)
    b = explode.submit(message)
    c = add.submit(a, b)  # cancelled with upstream_failed
    return c.result()


@pw.workflow
def fixable(log: str, path: str) -> int:
    a = mark.submit(log, "a", 1)
    b = needs_file.submit(path)
    c = add.submit(a, b)
    return mark.submit(log, "d", c.result()).result()


@pw.workflow
def crashes_once(log: str, marker: str) -> int:
    """Kills its own driver process after the second step, once: the re-run must replay."""
    a = mark.submit(log, "a", 1).result()
    b = mark.submit(log, "b", a + 1).result()
    if not os.path.exists(marker):
        Path(marker).write_text("crashed")
        os._exit(3)
    return mark.submit(log, "c", b + 1).result()


@pw.workflow
def nondeterministic(marker: str) -> int:
    """Submits a different job on its second run: replay must refuse it."""
    first_run = not os.path.exists(marker)
    if first_run:
        Path(marker).write_text("ran")
        double.submit(1)
        os._exit(3)
    return add.submit(1, 1).result()


@pw.workflow
def chain(log: str, steps: int, sleep_s: float) -> int:
    value = 0
    for i in range(steps):
        value = mark.submit(log, f"step{i}", value + 1, sleep_s).result()
    return value


@pw.workflow
def sleepers(n: int, seconds: float) -> list[float]:
    return [f.result() for f in sleep_for.map([seconds] * n)]


@pw.workflow
def peek(seconds: float) -> list[object]:
    """done() and state() in a driver are recorded: a replay sees the same answers."""
    f = sleep_for.submit(seconds)
    before = [f.done(), f.state()]
    f.result()
    return [*before, f.done(), f.state()]


@pw.workflow
def returns_early(seconds: float) -> int:
    """Returns while a job it submitted still runs: that job is not needed any more."""
    sleep_for.submit(seconds)
    return double.submit(2).result()


@pw.workflow
def feeds_child(x: int) -> int:
    """A nested workflow that waits, on the server, for a future among its arguments."""
    return child.submit(x=double.submit(x)).result()


@pw.job
def jitter(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


@pw.workflow
def rolling(n: int, parallel: int, marker: str) -> list[int]:
    """Keeps ``parallel`` jobs in flight and submits the next as each finishes (the HPO shape);
    its driver crashes once halfway, so the re-run replays an interleaving of waits and submits.
    """
    import random

    rng = random.Random(pw.seed())
    in_flight = [jitter.submit(rng.random() * 0.05, i) for i in range(parallel)]
    submitted, results = parallel, []
    while in_flight:
        done, in_flight = pw.wait(in_flight, return_when=pw.FIRST_COMPLETED)
        for f in done:
            results.append(f.result())
            if submitted < n:
                in_flight.append(jitter.submit(rng.random() * 0.05, submitted))
                submitted += 1
        if len(results) >= n // 2 and not os.path.exists(marker):
            Path(marker).write_text("crashed")
            os._exit(3)
    return results


# -- nested workflows deeper and wider than the driver slots (parking) ----------------------


@pw.workflow
def grandchild(log: str, i: int, sleep_s: float = 0.0) -> int:
    """Level 3: one job (each run of it appends to ``log``)."""
    return mark.submit(log, f"leaf{i}", i, sleep_s).result()


@pw.workflow
def middle(log: str, i: int, sleep_s: float = 0.0) -> int:
    """Level 2: waits for its own nested workflow."""
    return grandchild.submit(log=log, i=i, sleep_s=sleep_s).result() + 1


@pw.workflow
def nested(log: str, width: int, sleep_s: float = 0.0) -> int:
    """Level 1: ``width`` nested workflows at once, each nesting another: far more live
    workflows than driver slots."""
    runs = [middle.submit(log=log, i=i, sleep_s=sleep_s) for i in range(width)]
    return sum(r.result() for r in runs)
