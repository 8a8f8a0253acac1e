"""``pw.artifact``: read a file another job wrote to its ``pw.outputs()``.

Jobs pass small results as JSON; larger products (an event sample, a model) travel as
artifacts.  A downstream job is handed the upstream's result, which can carry the upstream's
job id (``pw.job_id()``), and fetches the file by name::

    @pw.job
    def produce(seed):
        np.save(pw.outputs() / "sample.npy", generate(seed))
        return {"job": pw.job_id()}

    @pw.job
    def select(sample):
        events = np.load(pw.artifact(sample["job"], "sample.npy"))

A job on a pilot reads with its own attempt token (it may read the jobs of the user it runs
for); a workflow driver with its own; anywhere else the user's client configuration is used.
When a workflow runs in this process (``flow(...)``), its jobs' outputs are local files.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from pilotwave.sdk import context, driver
from pilotwave.sdk.client import Client, default_client


def job_id() -> int | None:
    """The id of the job this code runs in (``None`` outside a job on a pilot)."""
    ctx = context.current()
    return ctx.job_id if ctx is not None else None


def artifact(job: int | None, name: str) -> Path:
    """The local path of artifact ``name`` of job ``job``, downloaded on first use.

    Raises ``pw.NotFound`` when the job does not exist, is not yours, or has no such file
    (``FileNotFoundError`` in a local run).
    """
    if not isinstance(name, str) or not name or name.startswith("/") or ".." in name.split("/"):
        raise ValueError(f"pw.artifact: {name!r} is not a relative file name")
    job_ctx = context.current()
    run = driver.current()
    if job is None or (isinstance(run, driver.LocalContext) and job_ctx is None):
        # A workflow run in this process: every job wrote to the same local outputs folder.
        path = context.outputs() / name
        if not path.is_file():
            raise FileNotFoundError(f"no artifact {name!r} in {context.outputs()} (a local run)")
        return path
    if isinstance(job, bool) or not isinstance(job, int) or job < 1:
        raise ValueError(f"pw.artifact: {job!r} is not a job id")
    own = job_ctx is not None and bool(job_ctx.server and job_ctx.token)
    if own and job_ctx is not None:
        client = Client(job_ctx.server, job_ctx.token)
    elif isinstance(run, driver.DriverContext):
        client = run.client
    else:
        client = default_client()
    key = hashlib.sha256(f"{client.url}\n{job}".encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"pilotwave-artifacts-{os.getuid()}" / key / name
    try:
        if not path.is_file():  # a succeeded job's artifacts never change: the copy stays valid
            data = client.artifact(job, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
            tmp.write_bytes(data)
            tmp.replace(path)
    finally:
        if own:
            client.close()
    return path
