"""The SQL schema: one table per concept, times as UNIX seconds (float), JSON payloads as text.

The server never interprets user payloads (arguments, results), so they stay JSON text
and are passed through without a decode/encode round trip.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Time = sa.Float(precision=53)
# BigInteger ids on PostgreSQL, but a plain INTEGER on SQLite so that it is the rowid alias.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", Time, nullable=False),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("user_id", Id, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("queues", sa.JSON, nullable=True),  # pilot tokens: the queues they may serve
    # Pilot tokens: run every user's jobs (pilots must isolate them) or only the owner's.
    sa.Column("all_users", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("description", sa.String(200), nullable=False, server_default=""),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("revoked_at", Time, nullable=True),
)

queues = sa.Table(
    "queues",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("created_at", Time, nullable=False),
)

pilots = sa.Table(
    "pilots",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("hostname", sa.String(200), nullable=False),
    sa.Column("token_id", Id, sa.ForeignKey("tokens.id"), nullable=False),
    sa.Column("queues", sa.JSON, nullable=False),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("cores", sa.Integer, nullable=False),
    sa.Column("memory_mb", sa.Integer, nullable=False),
    sa.Column("gpus", sa.JSON, nullable=False),  # [{"index", "model", "memory_mb"}]
    sa.Column("slots", sa.Integer, nullable=False),
    sa.Column("prefetch", sa.Integer, nullable=False, server_default="0"),
    sa.Column("driver_slots", sa.Integer, nullable=False, server_default="0"),
    # Its drivers that only wait (it may park them): what it last told the server.
    sa.Column("parkable", sa.Integer, nullable=False, server_default="0"),
    # How it keeps jobs apart (protocol.Isolation), and whose jobs it runs (None: anyone's).
    sa.Column("isolation", sa.String(16), nullable=False, server_default="none"),
    sa.Column("serves_owner", Id, nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("version", sa.String(32), nullable=False, server_default=""),
    sa.Column("claim_seq", sa.Integer, nullable=False, server_default="0"),
    sa.Column("registered_at", Time, nullable=False),
    sa.Column("last_seen", Time, nullable=False),
    sa.Index(None, "state", "last_seen"),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("owner_id", Id, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("key", sa.String(64), nullable=True),  # client idempotency key
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),  # JSON: function + args, or argv + env
    sa.Column("sandbox", sa.String(64), nullable=True),
    sa.Column("queue", sa.String(64), nullable=False),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("cores", sa.Integer, nullable=False),
    sa.Column("memory_mb", sa.Integer, nullable=False),
    sa.Column("gpus", sa.Integer, nullable=False),
    sa.Column("gpu_model", sa.String(200), nullable=True),
    sa.Column("gpu_memory_mb", sa.Integer, nullable=True),
    sa.Column("walltime_s", sa.Float, nullable=True),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("isolate", sa.Boolean, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("not_before", Time, nullable=False, server_default="0"),
    sa.Column("pilot_id", sa.String(32), nullable=True),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("started_at", Time, nullable=True),
    sa.Column("finished_at", Time, nullable=True),
    sa.Column("result", sa.Text, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("reason", sa.String(32), nullable=True),  # protocol.Reason: why it ended so
    sa.Column("workflow_id", Id, nullable=True),  # the workflow that submitted it (or it drives)
    sa.Column("deps_left", sa.Integer, nullable=False, server_default="0"),
    sa.Column("held", sa.Boolean, nullable=False, server_default=sa.false()),  # suspended
    sa.UniqueConstraint("owner_id", "key"),
    sa.Index(None, "owner_id", "id"),
    sa.Index(None, "workflow_id", "id"),
    sa.Index("ix_jobs_owner_state", "owner_id", "state"),  # a user's jobs in flight (quotas)
)

# Claims scan queued jobs in rank order (priority DESC, id), for one queue or for pilots serving all.
sa.Index("ix_jobs_claim_queue", jobs.c.state, jobs.c.queue, jobs.c.priority.desc(), jobs.c.id)
sa.Index("ix_jobs_claim_any", jobs.c.state, jobs.c.priority.desc(), jobs.c.id)
# Drivers are claimed for their own slots: found without scanning the queued compute jobs.
sa.Index("ix_jobs_claim_driver", jobs.c.kind, jobs.c.state, jobs.c.priority.desc(), jobs.c.id)

attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("job_id", Id, sa.ForeignKey("jobs.id"), primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True),
    sa.Column("pilot_id", sa.String(32), nullable=False),
    sa.Column("claim_seq", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("gpus", sa.JSON, nullable=False),  # assigned GPU indices on the pilot
    sa.Column("started_at", Time, nullable=False),
    sa.Column("ended_at", Time, nullable=True),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("cpu_s", sa.Float, nullable=True),
    sa.Column("max_rss_mb", sa.Float, nullable=True),
    sa.Column("log_bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Index(None, "pilot_id", "state"),
)

blobs = sa.Table(
    "blobs",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("created_at", Time, nullable=False),
)

# Who holds which blob (per-user blob quota): whoever uploaded it, even content another had
# stored already, and the owner of a job whose report attaches it as an artifact.  A holding
# goes with its blob; ``held_at`` (the latest upload) keeps an unreferenced blob for a grace time.
blob_holdings = sa.Table(
    "blob_holdings",
    metadata,
    sa.Column("user_id", Id, sa.ForeignKey("users.id"), primary_key=True),
    sa.Column(
        "sha256",
        sa.String(64),
        sa.ForeignKey("blobs.sha256", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("held_at", Time, nullable=False),
    sa.Index(None, "sha256"),
)

artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("job_id", Id, sa.ForeignKey("jobs.id"), primary_key=True),
    sa.Column("name", sa.String(500), primary_key=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("sha256", sa.String(64), sa.ForeignKey("blobs.sha256"), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", Time, nullable=False),
)

log_chunks = sa.Table(
    "log_chunks",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("job_id", Id, sa.ForeignKey("jobs.id"), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("pos", sa.BigInteger, nullable=False),  # byte offset within the attempt's log
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.UniqueConstraint("job_id", "attempt", "pos"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("ts", Time, nullable=False),
    sa.Column("job_id", Id, nullable=True),
    sa.Column("pilot_id", sa.String(32), nullable=True),
    sa.Column("attempt", sa.Integer, nullable=True),
    sa.Column("from_state", sa.String(16), nullable=True),
    sa.Column("to_state", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(200), nullable=False, server_default=""),
    sa.Index(None, "job_id", "id"),
    sa.Index(None, "pilot_id", "id"),
)

dependencies = sa.Table(
    "dependencies",
    metadata,
    sa.Column("job_id", Id, sa.ForeignKey("jobs.id"), primary_key=True),
    sa.Column("upstream_id", Id, sa.ForeignKey("jobs.id"), primary_key=True),
    sa.Index(None, "upstream_id"),
)

workflows = sa.Table(
    "workflows",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("owner_id", Id, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("key", sa.String(64), nullable=True),  # client idempotency key
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("driver_job_id", Id, nullable=True),  # its state is the workflow's final state
    sa.Column("parent_id", Id, nullable=True),  # the workflow whose driver submitted this one
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("suspended", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("progress", sa.Text, nullable=True),  # JSON the driver publishes for its watchers
    sa.Column("created_at", Time, nullable=False),
    # What its parked driver waits for (engine.parking): JSON {ids, mode, reports}, when it
    # stops waiting, how many jobs it still needs (for "all"), and whether it is ready to go on.
    sa.Column("wait", sa.Text, nullable=True),
    sa.Column("wait_deadline", Time, nullable=True),
    sa.Column("wait_left", sa.Integer, nullable=True),
    sa.Column("ready_at", Time, nullable=True),
    sa.UniqueConstraint("owner_id", "key"),
    sa.Index(None, "owner_id", "id"),
    sa.Index(None, "parent_id"),
    sa.Index(None, "wait_deadline"),
)

commands = sa.Table(
    "commands",
    metadata,
    sa.Column("workflow_id", Id, sa.ForeignKey("workflows.id"), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("call", sa.String(200), nullable=False),  # what the driver called, for messages
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),  # JSON: job ids submitted, or ids observed
    sa.Column("stale", sa.Boolean, nullable=False, server_default=sa.false()),  # cut by a retry
    sa.Column("created_at", Time, nullable=False),
)

reports = sa.Table(
    "reports",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("job_id", Id, sa.ForeignKey("jobs.id"), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("step", sa.BigInteger, nullable=False),
    sa.Column("value", sa.Float(precision=53), nullable=False),
    sa.Column("stop", sa.Boolean, nullable=True),  # the driver's answer; NULL until it decides
    sa.Column("created_at", Time, nullable=False),
    sa.UniqueConstraint("job_id", "attempt", "step"),
)

secrets = sa.Table(
    "secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(200), nullable=False),
)
