"""Python client of the retraining server (used by the MaleniaTrainer module, tests and scripts).

    client = MaleniaClient("http://gpu-box:8000", token)
    client.connect()                       # reachability, API version, token: one clear error each
    case = client.upload_case(folder)      # image.nii.gz, lesions.nii.gz, report.json
    job = client.start_job(steps=200)
    client.wait(job["id"])
    client.download_version("v2", dest)    # every file checked against the manifest's sha256

The token is sent only in the Authorization header and never appears in reprs, errors or logs.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from malenia import __version__
from malenia.atomic import atomic_dir
from malenia.errors import MaleniaError
from malenia.server import API_HEADER, API_VERSION, CASE_PARTS, api_compatible, api_major
from malenia.model.folder import MANIFEST, safe_relpath

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


class ClientError(MaleniaError):
    """Base of the client's errors; `str()` is one line for the user."""


class ServerUnreachable(ClientError):
    pass


class AuthRejected(ClientError):
    pass


class VersionMismatch(ClientError):
    pass


class RequestFailed(ClientError):
    def __init__(self, status: int, detail: str):
        super().__init__(f"server refused the request ({status}): {detail}")
        self.status, self.detail = status, detail


TOKEN_ENV = "MALENIA_SERVER_TOKEN"
TOKEN_FILE_ENV = "MALENIA_SERVER_TOKEN_FILE"
DEFAULT_TOKEN_FILE = Path("~/.config/malenia/server_token")


def resolve_token(explicit: str | None = None) -> str:
    """The token to use, instead of one kept in Slicer's plain-text settings: `explicit` if given, else
    $MALENIA_SERVER_TOKEN, else the file $MALENIA_SERVER_TOKEN_FILE or ~/.config/malenia/server_token,
    which must be readable by its owner only (mode 0600) on POSIX. '' when none is set."""
    import os

    if explicit and explicit.strip():
        return explicit.strip()
    if os.environ.get(TOKEN_ENV, "").strip():
        return os.environ[TOKEN_ENV].strip()
    path = Path(os.environ.get(TOKEN_FILE_ENV) or DEFAULT_TOKEN_FILE).expanduser()
    if not path.is_file():
        return ""
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise ClientError(f"token file {path} is readable by other users; run `chmod 600 {path}`")
    return path.read_text(encoding="utf-8").strip()


class MaleniaClient:
    def __init__(self, url: str, token: str, timeout: float = 60.0):
        import httpx

        url = (url or "").strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ClientError(f"server URL must start with http:// or https://, got {url[:80]!r}")
        self.url = url
        self._httpx = httpx
        self._http = httpx.Client(base_url=url, timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
                                  headers={"Authorization": f"Bearer {token}", API_HEADER: API_VERSION,
                                           "User-Agent": f"malenia-client/{__version__}"})

    def __repr__(self) -> str:  # never the token
        return f"MaleniaClient({self.url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "MaleniaClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- plumbing
    def _request(self, method: str, path: str, **kw) -> Any:
        httpx = self._httpx
        try:
            resp = self._http.request(method, path, **kw)
        except (httpx.ConnectError, httpx.ConnectTimeout) as err:
            raise ServerUnreachable(f"cannot reach the Malenia server at {self.url} ({_short(err)})") from None
        except httpx.TimeoutException:
            raise ServerUnreachable(f"the Malenia server at {self.url} did not answer in time") from None
        except httpx.TransportError as err:
            raise ServerUnreachable(f"connection to {self.url} failed ({_short(err)})") from None
        return self._check(resp)

    def _check(self, resp) -> Any:
        if resp.status_code < 400:
            if resp.status_code == 204:
                return None
            return resp.json() if resp.headers.get("content-type", "").startswith("application/json") else resp.text
        try:
            body = resp.json()
        except ValueError:
            body = {"detail": resp.text[:300]}
        detail = body.get("detail") if isinstance(body, dict) else str(body)
        if not isinstance(detail, str):
            detail = "; ".join(f"{'.'.join(map(str, e.get('loc', [])))}: {e.get('msg')}" for e in detail) \
                if isinstance(detail, list) else str(detail)
        if resp.status_code == 401:
            raise AuthRejected(f"the server at {self.url} rejected the token ({detail}); check it in the settings")
        if resp.status_code == 400 and isinstance(body, dict) and "api_version" in body:
            raise VersionMismatch(detail)
        raise RequestFailed(resp.status_code, detail)

    # -- server
    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health")

    def connect(self) -> dict[str, Any]:
        """Checks reachability, API compatibility and the token; returns the server's info."""
        health = self.health()
        server_api = str(health.get("api_version", "?"))
        if not api_compatible(server_api, API_VERSION):
            raise VersionMismatch(f"server API {server_api} (malenia {health.get('malenia_version')}) is not compatible "
                                  f"with this client's API {API_VERSION} (malenia {__version__}); "
                                  f"{'update the client' if _newer(server_api) else 'update the server'}")
        return self._request("GET", "/info")

    # -- cases
    def upload_case(self, folder: str | Path, name: str | None = None, progress: Progress | None = None) -> dict[str, Any]:
        """Uploads a case folder; returns {"case": {...}, "duplicate": bool}."""
        folder = Path(folder)
        files = [(field, fname, folder / fname) for field, fname in CASE_PARTS.items()]
        for _, fname, path in files:
            if not path.is_file():
                raise ClientError(f"{folder}: missing {fname}")
        body, length, ctype = _multipart(files, {"name": name or folder.name}, progress)
        return self._request("POST", "/cases", content=body, headers={"Content-Type": ctype, "Content-Length": str(length)})

    def cases(self) -> list[dict[str, Any]]:
        return self._request("GET", "/cases")["cases"]

    def delete_case(self, case_id: str) -> None:
        self._request("DELETE", f"/cases/{case_id}")

    # -- jobs
    def start_job(self, steps: int, case_ids: list[str] | None = None, val_case_ids: list[str] | None = None,
                  base_version: str | None = None, replay_fraction: float = 0.5) -> dict[str, Any]:
        return self._request("POST", "/jobs", json={"steps": steps, "case_ids": case_ids, "val_case_ids": val_case_ids,
                                                    "base_version": base_version, "replay_fraction": replay_fraction})

    def job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/jobs/{job_id}")

    def jobs(self) -> list[dict[str, Any]]:
        return self._request("GET", "/jobs")["jobs"]

    def log(self, job_id: str, lines: int = 200) -> str:
        return self._request("GET", f"/jobs/{job_id}/log", params={"lines": lines})

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/jobs/{job_id}/cancel")

    def wait(self, job_id: str, timeout: float = 3600.0, poll: float = 0.5,
             on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_update:
                on_update(job)
            if job["state"] in ("succeeded", "failed", "cancelled", "interrupted"):
                return job
            if time.monotonic() > deadline:
                raise ClientError(f"job {job_id} still {job['state']} after {timeout:.0f} s")
            time.sleep(poll)

    # -- model versions
    def versions(self) -> dict[str, Any]:
        return self._request("GET", "/models")

    def version(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/models/{name}")

    def promote(self, name: str, reason: str = "promoted by hand") -> dict[str, Any]:
        return self._request("POST", f"/models/{name}/promote", json={"reason": reason})

    def rollback(self) -> dict[str, Any]:
        return self._request("POST", "/models/rollback")

    def download_version(self, name: str, dest: str | Path, progress: Progress | None = None,
                         overwrite: bool = False) -> Path:
        """Downloads a version into `dest` (a model folder, written whole); every sha256 is checked."""
        info = self.version(name)
        manifest = info["manifest"]
        files = {safe_relpath(rel): digest for rel, digest in manifest["files"].items()}
        total = [0, 0]
        dest = Path(dest)
        with atomic_dir(dest, overwrite=overwrite, replaces=MANIFEST) as staging:
            for rel, digest in [*files.items(), (MANIFEST, info["manifest_sha256"])]:
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                got = self._download(f"/models/{name}/files/{rel}", target, progress, total)
                if got != digest:
                    raise ClientError(f"download of {name}/{rel} is corrupt: sha256 {got[:12]}… != {digest[:12]}…")
        return dest

    def _download(self, path: str, target: Path, progress: Progress | None, total: list[int]) -> str:
        h = hashlib.sha256()
        try:
            with self._http.stream("GET", path) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    self._check(resp)
                size = int(resp.headers.get("content-length", 0))
                total[1] += size
                with open(target, "wb") as f:
                    for chunk in resp.iter_bytes(1 << 20):
                        f.write(chunk)
                        h.update(chunk)
                        total[0] += len(chunk)
                        if progress:
                            progress(total[0], total[1])
        except self._httpx.TransportError as err:
            raise ServerUnreachable(f"download from {self.url} failed ({_short(err)})") from None
        return h.hexdigest()


def _multipart(files: list[tuple[str, str, Path]], fields: dict[str, str],
               progress: Progress | None) -> tuple[Iterator[bytes], int, str]:
    """A streamed multipart/form-data body with its exact length (so the server can refuse early)."""
    boundary = "malenia-" + secrets.token_hex(16)
    heads = []
    for key, value in fields.items():
        heads.append((f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'.encode()
                      + value.encode("utf-8") + b"\r\n", None))
    for field, fname, path in files:
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{fname}"\r\n'
                f"Content-Type: application/octet-stream\r\n\r\n").encode()
        heads.append((head, path))
    tail = f"--{boundary}--\r\n".encode()
    length = sum(len(h) + (p.stat().st_size + 2 if p else 0) for h, p in heads) + len(tail)

    def body() -> Iterator[bytes]:
        sent = 0
        for head, path in heads:
            yield head
            sent += len(head)
            if path is not None:
                with open(path, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        yield chunk
                        sent += len(chunk)
                        if progress:
                            progress(sent, length)
                yield b"\r\n"
                sent += 2
        yield tail
        if progress:
            progress(length, length)

    return body(), length, f"multipart/form-data; boundary={boundary}"


def _newer(server_api: str) -> bool:
    try:
        return api_major(server_api) > api_major(API_VERSION)
    except ValueError:
        return False


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return (text[-1] if text else type(err).__name__)[:200]
