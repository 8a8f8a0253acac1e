"""HTTP transport shared by the SDK and the pilot: auth, JSON, error mapping, retries on transport errors."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import ssl
import time
from collections.abc import Iterator
from typing import Any

import httpx

from pilotwave.errors import ApiError, ConfigError, NotFound, ServerUnreachable, api_error

log = logging.getLogger(__name__)
_RETRY_STATUS = {502, 503, 504}


class Http:
    """A connection-pooled JSON client for one server and token.

    Requests that are safe to repeat (all of pilotwave's: reads, keyed submits,
    idempotent reports) are retried on transport errors for up to ``retry_for_s``.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        retry_for_s: float = 30.0,
        timeout_s: float = 30.0,
        ca_bundle: str | None = None,
    ) -> None:
        """``ca_bundle``: the certificates an ``https`` server's must chain to (default:
        ``PILOTWAVE_CA_BUNDLE``, else the system's)."""
        self.url = url.rstrip("/")
        self.retry_for_s = retry_for_s
        self.ca_bundle = ca_bundle or os.environ.get("PILOTWAVE_CA_BUNDLE") or None
        verify: ssl.SSLContext | bool = True
        if self.ca_bundle:
            try:
                verify = ssl.create_default_context(cafile=self.ca_bundle)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"cannot use the CA bundle {self.ca_bundle}: {exc}") from None
        self._client = httpx.Client(
            base_url=self.url,
            verify=verify,
            headers={"authorization": f"Bearer {token}", "user-agent": "pilotwave"},
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )

    def close(self) -> None:
        self._client.close()

    def _untrusted_text(self, exc: ssl.SSLCertVerificationError) -> str:
        where = f"the bundle {self.ca_bundle}" if self.ca_bundle else "the system's certificates"
        return (
            f"the pilotwave server at {self.url} has a certificate that {where} does not "
            f"vouch for ({exc.verify_message}): point PILOTWAVE_CA_BUNDLE (or --ca-bundle) "
            "at the certificate of the CA that signed it"
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        params: dict[str, Any] | None = None,
        wait_s: float = 0.0,
        retry_for_s: float | None = None,
        raw: bool = False,
    ) -> Any:
        """Send a request; return the decoded JSON (or bytes with ``raw``); raise ``ApiError`` subclasses."""
        budget = self.retry_for_s if retry_for_s is None else retry_for_s
        deadline = time.monotonic() + budget
        delay = 0.1
        timeout = httpx.Timeout(wait_s + 30.0, connect=10.0)
        headers = {"content-type": "application/json"} if json_body is not None else None
        body = _dumps(json_body) if json_body is not None else content
        while True:
            try:
                resp = self._client.request(
                    method, path, content=body, params=params, timeout=timeout, headers=headers
                )
            except httpx.TransportError as exc:
                untrusted = _untrusted(exc)
                if untrusted is not None:  # no retry makes a certificate trusted
                    raise ServerUnreachable(self._untrusted_text(untrusted)) from exc
                if time.monotonic() + delay > deadline:
                    raise ServerUnreachable(
                        f"cannot reach the pilotwave server at {self.url}: {exc}"
                    ) from exc
                log.info("retrying %s %s after %s", method, path, type(exc).__name__)
            else:
                if resp.status_code < 400:
                    if raw:
                        return resp.content
                    return resp.json() if resp.content else None
                wait = _retry_after(resp)
                if wait is not None and time.monotonic() + wait <= deadline:
                    log.info("over the server's submission rate: retrying in %.1f s", wait)
                    time.sleep(wait)  # a rate quota says when to come back
                    continue
                if resp.status_code not in _RETRY_STATUS or time.monotonic() + delay > deadline:
                    raise _error(resp)
            time.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, 5.0)

    def stream_lines(self, method: str, path: str, body: Any, wait_s: float) -> Iterator[Any]:
        """Send a request and yield the JSON lines of a streamed answer as they arrive."""
        timeout = httpx.Timeout(wait_s + 30.0, connect=10.0)
        content = _dumps(body)
        headers = {"content-type": "application/json"}
        try:
            with self._client.stream(
                method, path, content=content, headers=headers, timeout=timeout
            ) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise _error(resp)
                for line in resp.iter_lines():
                    if line:
                        yield json.loads(line)
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"lost the connection to {self.url}: {exc}") from exc

    def put_blob(self, sha256: str, data: bytes) -> None:
        """Upload content-addressed data unless the server already has it."""
        try:
            self.request("HEAD", f"/api/v1/blobs/{sha256}", raw=True)
        except NotFound:
            self.request(
                "PUT",
                f"/api/v1/blobs/{sha256}",
                content=data,
                raw=True,
                retry_for_s=max(self.retry_for_s, 60.0),
            )

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, json_body=body if body is not None else {}, **kw)


def _record(obj: Any) -> Any:
    """Protocol records (dataclasses) as JSON objects; json recurses into their fields."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _dumps(body: Any) -> bytes:
    return json.dumps(body, allow_nan=True, default=_record).encode()


def _retry_after(resp: httpx.Response) -> float | None:
    """Seconds a 429 asks to wait, when waiting will help (a rate, not a count of jobs)."""
    if resp.status_code != 429:
        return None
    try:
        return float(resp.headers["retry-after"])
    except (KeyError, ValueError):
        return None


def _untrusted(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate error behind a transport error, if that is what it was."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _error(resp: httpx.Response) -> ApiError:
    name = None
    try:
        data = resp.json()
        detail, field, name = data.get("detail", resp.text), data.get("field"), data.get("error")
    except (ValueError, AttributeError):
        detail, field = resp.text or resp.reason_phrase, None
    if not isinstance(detail, str):
        detail = json.dumps(detail)
    return api_error(resp.status_code, detail, field, name if isinstance(name, str) else None)
