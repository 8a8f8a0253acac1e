"""The ``pilotwave`` command line."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from pilotwave.cli import active as active_commands
from pilotwave.cli import hpo as hpo_commands
from pilotwave.cli import limits as limits_commands
from pilotwave.cli import workflows as workflow_commands
from pilotwave.cli.common import (
    STATE_STYLE,
    HomeOpt,
    JsonOpt,
    _client,
    _duration,
    _print_json,
    _when,
    err,
    out,
)
from pilotwave.errors import PilotwaveError
from pilotwave.pilot.isolation import DEFAULT_UID_BASE
from pilotwave.protocol import Isolation
from pilotwave.protocol.limits import GiB
from pilotwave.sdk import config
from pilotwave.server.quotas import Quotas

app = typer.Typer(
    help="Run ML and statistics jobs and workflows on any machine, durably.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
admin_app = typer.Typer(help="Users and tokens (needs an admin token).", no_args_is_help=True)
user_app = typer.Typer(help="Users.", no_args_is_help=True)
token_app = typer.Typer(help="Tokens.", no_args_is_help=True)
admin_app.add_typer(user_app, name="user")
admin_app.add_typer(token_app, name="token")
app.add_typer(admin_app, name="admin")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _home(home: Path | None) -> Path:
    if home is not None:
        os.environ["PILOTWAVE_HOME"] = str(home)
    return config.home()


# -- servers and pilots -----------------------------------------------------------------


@app.command()
def server(
    host: Annotated[
        str, typer.Option(help="Address to bind (0.0.0.0 for pilots on other machines).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 picks a free one).")] = 8765,
    db: Annotated[
        str | None,
        typer.Option(
            help="Database URL, e.g. postgresql+psycopg://user@host/db (default: SQLite under the home)."
        ),
    ] = None,
    home: HomeOpt = None,
    heartbeat_interval: Annotated[
        float, typer.Option(help="Seconds between pilot heartbeats.")
    ] = 10.0,
    heartbeat_timeout: Annotated[
        float, typer.Option(help="Silence after which a pilot is lost (default: 3 intervals).")
    ] = 0.0,
    retry_backoff: Annotated[
        float,
        typer.Option(help="Back-off before the first retry of a failed job, doubling each time."),
    ] = 2.0,
    quota_jobs_in_flight: Annotated[
        int, typer.Option(help="Jobs one user may have not finished (admins: no quota).")
    ] = Quotas.jobs_in_flight,
    quota_submit_rate: Annotated[
        float, typer.Option(help="Jobs one user may submit per second, sustained.")
    ] = Quotas.submit_rate,
    quota_blob_gb: Annotated[
        float,
        typer.Option(
            help="GiB of sandboxes and job outputs one user may hold on the server.", min=0
        ),
    ] = Quotas.blob_bytes / GiB,
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="Serve https with this certificate (PEM; with --tls-key)."),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="The certificate's private key (PEM).")
    ] = None,
    attempt_key_file: Annotated[
        Path | None,
        typer.Option(
            help="Key that signs job and driver tokens (default: attempt-key under the home, "
            "created 0600). Every server of one database needs the same file."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning.")] = "info",
) -> None:
    """Run the pilotwave server (REST API, job queue, reaper) in the foreground."""
    from pilotwave.server.main import serve
    from pilotwave.server.settings import Settings
    from pilotwave.wms.retry import RetryPolicy

    _setup_logging(log_level)
    settings = Settings(
        home=_home(home),
        db_url=db,
        heartbeat_interval_s=heartbeat_interval,
        heartbeat_timeout_s=heartbeat_timeout or 3 * heartbeat_interval,
        retry=RetryPolicy(backoff_base_s=retry_backoff),
        attempt_key_file=attempt_key_file,
        quotas=Quotas(
            jobs_in_flight=quota_jobs_in_flight,
            submit_rate=quota_submit_rate,
            blob_bytes=int(quota_blob_gb * GiB),
        ),
    )
    serve(
        settings,
        host=host,
        port=port,
        log_level="warning" if log_level != "debug" else "info",
        tls=_tls(tls_cert, tls_key),
    )


def _tls(cert: Path | None, key: Path | None) -> tuple[Path, Path] | None:
    """A certificate and its key, both given and readable, or neither."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise typer.BadParameter(
            "https needs both --tls-cert and --tls-key", param_hint="--tls-key"
        )
    for path in (cert, key):
        if not path.is_file():
            raise typer.BadParameter(f"no file {path}", param_hint="--tls-cert/--tls-key")
    return cert.resolve(), key.resolve()


def _account(name: str | None) -> int | None:
    """The uid of an account given by name or number."""
    if name is None:
        return None
    import pwd

    try:
        return int(name) if name.isdigit() else pwd.getpwnam(name).pw_uid
    except KeyError:
        raise typer.BadParameter(
            f"no account {name!r} on this machine", param_hint="--run-as"
        ) from None


def _pilot_token(path: Path | None) -> str:
    """The pilot's token: from ``path`` (which others must not be able to read), else from
    ``PILOTWAVE_TOKEN``, which is then dropped from this process's environment."""
    if path is not None:
        try:
            mode = path.stat().st_mode
            text = path.read_text().strip()
        except OSError as exc:
            raise typer.BadParameter(
                f"cannot read {path}: {exc.strerror}", param_hint="--token-file"
            ) from None
        if mode & 0o077:
            raise typer.BadParameter(
                f"{path} is readable by other users (mode {mode & 0o777:o}): chmod 600 {path}",
                param_hint="--token-file",
            )
        if not text:
            raise typer.BadParameter(f"{path} is empty", param_hint="--token-file")
        return text
    text = os.environ.pop("PILOTWAVE_TOKEN", "").strip()
    if not text:
        raise typer.BadParameter(
            "no token: pass --token-file FILE (chmod 600) or set PILOTWAVE_TOKEN",
            param_hint="--token-file",
        )
    return text


@app.command()
def pilot(
    server: Annotated[str, typer.Option(help="Server URL.", envvar="PILOTWAVE_URL")],
    token_file: Annotated[
        Path | None,
        typer.Option(
            help="File holding the pilot (or admin) token, readable only by you (chmod 600). "
            "Or set PILOTWAVE_TOKEN.",
            envvar="PILOTWAVE_TOKEN_FILE",
        ),
    ] = None,
    token: Annotated[str | None, typer.Option(hidden=True)] = None,
    ca_bundle: Annotated[
        Path | None,
        typer.Option(
            help="Certificates the server's (https) must chain to; its jobs get them too.",
            envvar="PILOTWAVE_CA_BUNDLE",
        ),
    ] = None,
    queue: Annotated[
        list[str], typer.Option(help="Queue to serve (repeat for several; * for all).")
    ] = ["default"],  # noqa: B006
    labels: Annotated[str, typer.Option(help="Comma-separated labels jobs may require.")] = "",
    slots: Annotated[int, typer.Option(help="Jobs run at once (default: cores).")] = 0,
    prefetch: Annotated[
        int,
        typer.Option(
            help="Most CPU jobs to hold ahead of free slots while recent jobs took under 0.5 s "
            "(hides the claim round trip); a job held over 2 s is handed back. 0: never."
        ),
    ] = 16,
    driver_slots: Annotated[
        int,
        typer.Option(
            help="Workflow steps run at once, in slots of their own (they never take a job slot); "
            "a workflow waiting for its jobs holds none."
        ),
    ] = 4,
    warm_drivers: Annotated[
        int,
        typer.Option(
            help="Waiting workflows kept in memory; beyond that the longest waiting is stopped "
            "and resumes by replay when its jobs finish."
        ),
    ] = 8,
    cores: Annotated[int, typer.Option(help="Cores offered (default: detected).")] = 0,
    memory_mb: Annotated[int, typer.Option(help="Memory offered in MB (default: detected).")] = 0,
    gpu: Annotated[
        list[str],
        typer.Option(help="Declare a GPU as MODEL[:MEMORY_MB] instead of detecting (repeat)."),
    ] = [],  # noqa: B006
    no_gpus: Annotated[
        bool, typer.Option("--no-gpus", help="Offer no GPUs even if some are detected.")
    ] = False,
    idle_exit: Annotated[
        float, typer.Option(help="Exit after this many seconds without work (0: never).")
    ] = 0.0,
    drain_timeout: Annotated[
        float,
        typer.Option(
            help="On SIGTERM, seconds to let running jobs finish before handing them back."
        ),
    ] = 60.0,
    workdir: Annotated[
        Path | None, typer.Option(help="Scratch directory for jobs (default: a temporary one).")
    ] = None,
    name: Annotated[str, typer.Option(help="Pilot name shown by the server.")] = "",
    isolation: Annotated[
        Isolation,
        typer.Option(
            help="none: jobs run as you (a pilot token of your own only). user: as root, each "
            "owner's jobs as a user of their own in namespaces of their own (needed to run "
            "every user's jobs). container: as user, and each job in a podman container "
            "that sees only its owner's files."
        ),
    ] = Isolation.NONE,
    uid_base: Annotated[
        int,
        typer.Option(help="--isolation user/container: owner N's jobs run as uid UID_BASE + N."),
    ] = DEFAULT_UID_BASE,
    run_as: Annotated[
        str | None,
        typer.Option(
            help="--isolation user/container: run every job as this account instead (weaker: "
            "owners share one uid, though each job still has namespaces of its own)."
        ),
    ] = None,
    container_image: Annotated[
        str | None,
        typer.Option(
            help="--isolation container: the podman image jobs run in (default: the host's "
            "own /usr and /etc, read-only). It must run this pilot's Python, which is "
            "mounted into it."
        ),
    ] = None,
    sandbox_cache_mb: Annotated[
        int,
        typer.Option(
            help="Unpacked sandboxes kept for later jobs, in MB; the least recently used go first."
        ),
    ] = 10240,
    pass_env: Annotated[
        list[str],
        typer.Option(
            help="Also give jobs these variables of the pilot's environment (a glob; repeat). "
            "Jobs always get PATH, HOME, locale, proxies and CA bundles, never PILOTWAVE_*."
        ),
    ] = [],  # noqa: B006
    log_level: Annotated[str, typer.Option(help="debug, info, warning.")] = "info",
) -> None:
    """Run a pilot: register this machine's resources and run jobs from the server."""
    from pilotwave.pilot import resources
    from pilotwave.pilot.agent import Pilot, PilotConfig
    from pilotwave.pilot.environment import check_pass_env

    _setup_logging(log_level)
    if token is not None:
        raise typer.BadParameter(
            "every process on this machine can read a command line: put the token in a file "
            "only you can read and pass --token-file, or set PILOTWAVE_TOKEN",
            param_hint="--token",
        )
    secret = _pilot_token(token_file)
    try:
        passed = check_pass_env(pass_env)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--pass-env") from None
    try:
        gpus = (
            [resources.parse_gpu(g, i) for i, g in enumerate(gpu)]
            if gpu
            else ([] if no_gpus else resources.detect_gpus())
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--gpu") from None
    n_cores = cores or resources.cores()
    cfg = PilotConfig(
        server=server,
        token=secret,
        pass_env=passed,
        sandbox_cache_bytes=sandbox_cache_mb * 1024 * 1024,
        isolation=isolation,
        uid_base=uid_base,
        run_as=_account(run_as),
        container_image=container_image,
        ca_bundle=ca_bundle,
        queues=[q for qs in queue for q in qs.split(",") if q],
        labels=[x for x in labels.split(",") if x],
        cores=n_cores,
        memory_mb=memory_mb or resources.memory_mb(),
        slots=slots or n_cores,
        prefetch=prefetch,
        driver_slots=driver_slots,
        warm_drivers=warm_drivers,
        gpus=gpus,
        idle_exit_s=idle_exit or None,
        drain_timeout_s=drain_timeout,
        workdir=workdir,
        name=name or f"{socket.gethostname()}:{os.getpid()}",
        cache=config.home() / "cache" / "sandboxes",
    )
    raise typer.Exit(Pilot(cfg).run())


@app.command()
def up(
    pilots: Annotated[int, typer.Option(help="Local pilots to start.")] = 2,
    port: Annotated[int, typer.Option(help="Server port.")] = 8765,
    db: Annotated[
        str | None, typer.Option(help="Database URL (default: SQLite under the home).")
    ] = None,
    slots: Annotated[int, typer.Option(help="Slots per pilot (default: cores).")] = 0,
    home: HomeOpt = None,
    detach: Annotated[
        bool, typer.Option(help="Start in the background; stop with `pilotwave down`.")
    ] = False,
    isolation: Annotated[
        Isolation,
        typer.Option(
            help="none: the pilots run the admin's jobs (yours). user (as root): every user's, "
            "each owner's as a user of their own; container: also each job in a podman "
            "container (see `pilotwave pilot --help`)."
        ),
    ] = Isolation.NONE,
    tls_cert: Annotated[
        Path | None, typer.Option(help="Serve https with this certificate (with --tls-key).")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The certificate's private key.")] = None,
) -> None:
    """Start a server and local pilots, and configure this machine's SDK and CLI to use them."""
    from pilotwave.provision.local import LocalCluster

    cluster = LocalCluster(
        _home(home),
        pilots=pilots,
        slots=slots or None,
        db=db,
        port=port,
        detach=detach,
        isolation=isolation.value,
        tls=_tls(tls_cert, tls_key),
    )
    try:
        cluster.start()
        cluster.wait_for_pilots()
    except PilotwaveError as exc:
        cluster.stop()
        err.print(f"[red]pilotwave up failed:[/] {exc}")
        raise typer.Exit(1) from None
    out.print(f"[bold green]pilotwave is up[/] at {cluster.url} with {pilots} pilot(s)")
    out.print(f"  state and logs: {cluster.home}   client config: {cluster.home / 'client.json'}")
    if detach:
        out.print("  stop it with: pilotwave down")
        return
    out.print("  Ctrl-C stops it")
    stop = False

    def _stop(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop:
            signal.pause() if hasattr(signal, "pause") else time.sleep(1)
    except KeyboardInterrupt:
        pass
    out.print("stopping…")
    cluster.stop()


@app.command()
def down(home: HomeOpt = None) -> None:
    """Stop a cluster started with `pilotwave up --detach`."""
    from pilotwave.provision.local import stop_detached

    if stop_detached(_home(home)):
        out.print("stopped")
    else:
        err.print("no detached cluster found")
        raise typer.Exit(1)


# -- jobs ---------------------------------------------------------------------------------


@app.command()
def run(
    cmd: Annotated[list[str], typer.Argument(help="The command, after --.")],
    cores: Annotated[int, typer.Option(help="Cores.")] = 1,
    memory_mb: Annotated[int, typer.Option(help="Memory in MB.")] = 0,
    gpus: Annotated[int, typer.Option(help="GPUs.")] = 0,
    queue: Annotated[str, typer.Option(help="Queue.")] = "default",
    walltime: Annotated[float, typer.Option(help="Walltime in seconds (0: none).")] = 0.0,
    max_attempts: Annotated[int, typer.Option(help="Attempts before the job fails.")] = 1,
    sandbox: Annotated[
        Path | None, typer.Option(help="Directory to ship (default: the current one).")
    ] = None,
    no_sandbox: Annotated[
        bool, typer.Option("--no-sandbox", help="Ship nothing; run in a scratch directory.")
    ] = False,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Print the job id and return.")
    ] = False,
) -> None:
    """Run one shell command as a job, streaming its output: `pilotwave run -- python train.py`."""
    from pilotwave.sdk.jobs import shell

    client = _client()
    try:
        fut = shell(
            cmd,
            client=client,
            cores=cores,
            memory_mb=memory_mb,
            gpus=gpus,
            queue=queue,
            walltime_s=walltime or None,
            max_attempts=max_attempts,
            sandbox=None if no_sandbox else (sandbox or Path.cwd()),
        )
    except PilotwaveError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    err.print(f"[dim]job {fut.id} submitted[/]")
    if detach:
        out.print(fut.id)
        return
    for chunk in client.logs(fut.id, follow=True):
        sys.stdout.write(chunk["data"])
        sys.stdout.flush()
    job = client.job(fut.id)
    if job["state"] != "succeeded":
        err.print(
            f"[red]job {fut.id} {job['state']}:[/] {(job.get('error') or '').strip().splitlines()[-1:] or ''}"
        )
    code = (job.get("result") or {}).get("exit_code") if job["state"] == "succeeded" else None
    raise typer.Exit(0 if code == 0 else 1)


@app.command()
def jobs(
    state: Annotated[list[str], typer.Option(help="Only jobs in this state (repeatable).")] = [],  # noqa: B006
    queue: Annotated[str | None, typer.Option(help="Only jobs in this queue.")] = None,
    limit: Annotated[int, typer.Option(help="How many (newest first).")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List your jobs, newest first."""
    client = _client()
    rows = client.jobs(state=state, queue=queue, limit=limit)
    if as_json:
        _print_json(rows)
        return
    table = Table(box=None)
    for col in ("id", "name", "state", "queue", "attempts", "pilot", "submitted", "ran"):
        table.add_column(col)
    for j in rows:
        style = STATE_STYLE.get(j["state"], "")
        table.add_row(
            str(j["id"]),
            j["name"][:40],
            f"[{style}]{j['state']}[/]" if style else j["state"],
            j["queue"],
            f"{j['attempts']}/{j['max_attempts']}",
            (j["pilot_id"] or "")[:8],
            _when(j["created_at"]),
            _duration(j["started_at"], j["finished_at"]),
        )
    out.print(table)
    counts = client.summary()
    out.print("[dim]" + "  ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + "[/]")


@app.command()
def job(
    job_id: int,
    as_json: JsonOpt = False,
    events: Annotated[bool, typer.Option(help="Show the job's story.")] = False,
) -> None:
    """Show one job: spec, state, attempts, result or error."""
    client = _client()
    info = client.job(job_id)
    if events:
        info["events"] = client.events(job_id)
    if as_json:
        _print_json(info)
        return
    style = STATE_STYLE.get(info["state"], "")
    out.print(
        f"[bold]job {info['id']}[/] {info['name']}  [{style}]{info['state']}[/]  queue={info['queue']}  "
        f"cores={info['cores']} gpus={info['gpus']} attempts={info['attempts']}/{info['max_attempts']}"
    )
    for a in info["attempt_history"]:
        out.print(
            f"  attempt {a['number']}: {a['state']} on pilot {a['pilot_id'][:8]} "
            f"{_duration(a['started_at'], a['ended_at'])}"
            + (f" — {a['error'].strip().splitlines()[-1]}" if a.get("error") else "")
        )
    if info["state"] == "succeeded":
        out.print("result:", json.dumps(info["result"])[:2000])
    elif info.get("error"):
        out.print(f"[red]error:[/]\n{info['error']}")
    for e in info.get("events", []):
        out.print(
            f"  {_when(e['ts'])} {e['from_state'] or '':>9} → {e['to_state']:<9} {e['reason']}"
        )


@app.command()
def logs(
    job_id: int,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep streaming until the job ends.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Print a job's output (stdout and stderr, every attempt)."""
    client = _client()
    attempt = 0
    chunks = []
    for chunk in client.logs(job_id, follow=follow):
        if as_json:
            chunks.append(chunk)
            continue
        if chunk["attempt"] != attempt:
            attempt = chunk["attempt"]
            err.print(f"[dim]── attempt {attempt} ──[/]")
        sys.stdout.write(chunk["data"])
        sys.stdout.flush()
    if as_json:
        _print_json(chunks)


@app.command()
def artifacts(
    job_id: int,
    get: Annotated[
        Path | None, typer.Option("--get", help="Download the files into this directory.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the files a job wrote to pw.outputs(), or download them with --get DIR."""
    client = _client()
    rows = client.artifacts(job_id)
    if get is not None:
        for path in client.download(job_id, get):
            out.print(str(path))
        return
    if as_json:
        _print_json(rows)
        return
    if not rows:
        err.print(f"job {job_id} wrote no files to pw.outputs()")
        return
    table = Table(box=None)
    for col in ("name", "size", "attempt"):
        table.add_column(col)
    for a in rows:
        table.add_row(a["name"], str(a["size"]), str(a["attempt"]))
    out.print(table)


@app.command()
def pilots(as_json: JsonOpt = False) -> None:
    """List pilots and their resources."""
    rows = _client().pilots()
    if as_json:
        _print_json(rows)
        return
    table = Table(box=None)
    columns = ("id", "name", "state", "isolation", "runs jobs of", "queues", "slots", "cores")
    for col in (*columns, "memory", "gpus", "last seen"):
        table.add_column(col)
    for p in rows:
        table.add_row(
            p["id"][:8],
            p["name"],
            p["state"],
            p["isolation"],
            p["serves"] or "all users",
            ",".join(p["queues"]),
            str(p["slots"]),
            str(p["cores"]),
            f"{p['memory_mb'] / 1024:.0f}G",
            ",".join(g["model"] for g in p["gpus"]) or "-",
            _when(p["last_seen"]),
        )
    out.print(table)


@app.command()
def whoami(as_json: JsonOpt = False) -> None:
    """Show the user and role of the configured token."""
    client = _client()
    me = client.whoami()
    if as_json:
        _print_json({**me, "url": client.url})
    else:
        out.print(f"{me['user']} ({me['role']}) at {client.url}")


# -- admin ----------------------------------------------------------------------------------


@user_app.command("add")
def user_add(name: str) -> None:
    """Create a user."""
    _client().add_user(name)
    out.print(
        f"user {name} created; give them a token with: pilotwave admin token create --user {name}"
    )


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Option(help="Owner of the token.")] = "admin",
    pilot: Annotated[
        bool, typer.Option("--pilot", help="A pilot token (runs jobs, cannot submit).")
    ] = False,
    admin: Annotated[bool, typer.Option("--admin", help="An admin token.")] = False,
    queue: Annotated[
        list[str], typer.Option(help="Queues a pilot token may serve (repeat; * for all).")
    ] = [],  # noqa: B006
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    all_users: Annotated[
        bool,
        typer.Option(
            "--all-users",
            help="A pilot token whose pilots run every user's jobs (they must then run with "
            "--isolation user). Without it, its pilots run only the token owner's jobs.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a token and print it (it is shown only once)."""
    if pilot and admin:
        raise typer.BadParameter("choose --pilot or --admin, not both")
    role = "pilot" if pilot else "admin" if admin else "user"
    if role == "pilot" and not queue:
        raise typer.BadParameter(
            "a pilot token needs --queue (repeat it, or * for every queue)", param_hint="--queue"
        )
    if all_users and role != "pilot":
        raise typer.BadParameter("--all-users is for pilot tokens (--pilot)")
    tok = _client().create_token(
        user, role=role, queues=queue or None, description=description, all_users=all_users
    )
    if as_json:
        _print_json(tok)
    else:
        out.print(tok["token"])


@token_app.command("list")
def token_list(as_json: JsonOpt = False) -> None:
    """List tokens (never their secrets)."""
    rows = _client().tokens()
    if as_json:
        _print_json(rows)
        return
    table = Table(box=None)
    for col in ("id", "user", "role", "queues", "created", "revoked", "description"):
        table.add_column(col)
    for t in rows:
        table.add_row(
            str(t["id"]),
            t["user"],
            t["role"],
            ",".join(t["queues"] or []),
            _when(t["created_at"]),
            _when(t["revoked_at"]),
            t["description"],
        )
    out.print(table)


@token_app.command("revoke")
def token_revoke(token_id: int) -> None:
    """Revoke a token (takes effect within seconds)."""
    _client().revoke_token(token_id)
    out.print(f"token {token_id} revoked")


for _command in workflow_commands.COMMANDS:
    app.command()(_command)
app.command()(hpo_commands.hpo)
app.command()(limits_commands.limits)
app.command()(active_commands.active)


def main() -> None:
    try:
        app()
    except PilotwaveError as exc:
        err.print(f"[red]error:[/] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
