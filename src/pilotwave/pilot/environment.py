"""What a job's environment holds: an allowlist of the pilot's own, never its secrets.

A pilot's environment may hold its token, ``PILOTWAVE_HOME`` (with the admin token and
``client.json`` under it), cloud credentials or anything a batch system put there.  A job
gets only: the variables below that make programs work (paths, locale, proxies, CA bundles),
the ones the pilot's operator names with ``--pass-env``, what the pilot sets for the job (its
own attempt token, ids, server URL, GPUs, cores), and what the job spec asks for (shell
jobs' ``env``), which can never replace the pilot's.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping

PASSED = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "TERM",
        "TZ",
        "LANG",
        "LANGUAGE",
        "TMPDIR",
        "LD_LIBRARY_PATH",
        "PYTHONPATH",
        "PYTHONHOME",
        "VIRTUAL_ENV",
        "CONDA_PREFIX",
        "CONDA_DEFAULT_ENV",
        "CUDA_HOME",
        "CUDA_PATH",
        "OMP_NUM_THREADS",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
    }
)
"""Passed to jobs when the pilot has them: what programs need to find things and talk out."""
PASSED_PREFIXES = ("LC_",)

PER_JOB = frozenset({"PILOTWAVE_JOB_ID", "PILOTWAVE_ATTEMPT", "PILOTWAVE_JOB_TOKEN"})
"""Set for one job; a warm worker process is started without them and sets them per job."""


def check_pass_env(patterns: Iterable[str]) -> list[str]:
    """The operator's ``--pass-env`` globs, refusing any that could pass the pilot's secrets."""
    out = []
    for p in patterns:
        if not p or fnmatch.fnmatchcase("PILOTWAVE_TOKEN", p) or p.upper().startswith("PILOTWAVE"):
            raise ValueError(
                f"--pass-env {p!r}: PILOTWAVE_* variables are the pilot's own; jobs get theirs"
            )
        out.append(p)
    return out


def passed(pilot_env: Mapping[str, str], pass_env: Iterable[str] = ()) -> dict[str, str]:
    """The variables of ``pilot_env`` a job may see: ``PASSED``, ``LC_*`` and the operator's
    ``pass_env`` globs, never ``PILOTWAVE_*``.  A pilot works this out once; each job's
    environment is then this, what its spec asks for, and the pilot's settings for it, in
    that order (the pilot's win)."""
    patterns = tuple(pass_env)
    return {
        k: v
        for k, v in pilot_env.items()
        if (k in PASSED or k.startswith(PASSED_PREFIXES) or _any(k, patterns))
        and not k.startswith("PILOTWAVE")
    }


def _any(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)
