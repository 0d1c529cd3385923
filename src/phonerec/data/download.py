"""Resumable HTTP download with a progress bar and integrity checks.

Bytes go to `<dest>.part`; a later call (or a retry) asks for the rest with a Range request. A server
that ignores Range (200 instead of 206) makes us start over; one that sends no Content-Length gets a
progress bar without a total. Only a complete, verified file is renamed to `dest`.
"""

import http.client
import logging
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from phonerec.base.errors import CorpusError
from phonerec.base.files import file_digest

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 16


def _verify(path: Path, size: int | None, md5: str | None) -> None:
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise CorpusError(f"{path}: {actual_size} bytes, expected {size}")
    if md5 is not None and file_digest(path, "md5") != md5:
        raise CorpusError(f"{path}: MD5 differs from the published {md5}; delete it and download again")


def _fetch(url: str, part: Path, timeout: float) -> None:
    """One attempt: append the rest of `url` to `part`. Returns when the server has sent everything."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "phonerec"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            # Nothing left to send: the part is complete if the server's total says so.
            total = re.search(r"/(\d+)", err.headers.get("Content-Range", ""))
            if total and int(total.group(1)) == have:
                return
            log.info("%s: the server refused the resume range; downloading from the start", url)
            part.unlink()
            return _fetch(url, part, timeout)
        raise
    with response:
        if have and response.status == 200:
            log.info("%s: the server ignores Range requests; downloading from the start", url)
            have = 0
        elif have:
            start = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            if not start or int(start.group(1)) != have:
                log.info("%s: unexpected Content-Range; downloading from the start", url)
                response.close()
                part.unlink()
                return _fetch(url, part, timeout)
            log.info("%s: resuming at byte %d", url, have)
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with (
            open(part, "ab" if have else "wb") as out,
            tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=part.name[: -len(".part")]) as bar,
        ):
            for block in iter(lambda: response.read(CHUNK_BYTES), b""):
                out.write(block)
                bar.update(len(block))
        if total is not None and part.stat().st_size < total:
            raise ConnectionError(f"connection closed after {part.stat().st_size} of {total} bytes")


def download(
    url: str,
    dest: Path,
    size: int | None = None,
    md5: str | None = None,
    attempts: int = 5,
    timeout: float = 60.0,
) -> Path:
    """Download `url` to `dest` unless it is there already; verify `size` and `md5` when given."""
    dest = Path(dest)
    if dest.exists():
        _verify(dest, size, md5)
        log.info("%s: already downloaded", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, attempts + 1):
        had = part.stat().st_size if part.exists() else 0
        try:
            _fetch(url, part, timeout)
            break
        # URLError, HTTPError, ConnectionError and TimeoutError are OSErrors; a chunked body that breaks off raises
        # http.client.IncompleteRead, an HTTPException.
        except (OSError, http.client.HTTPException) as err:
            if isinstance(err, urllib.error.HTTPError) and err.code < 500:
                raise CorpusError(f"could not download {url}: HTTP {err.code} {err.reason}") from err
            progressed = part.exists() and part.stat().st_size > had
            # Retry a transfer that broke off; an attempt that got nothing (no network, no such host) is final.
            if attempt == attempts or not progressed:
                raise CorpusError(f"could not download {url}: {err}") from err
            log.warning("%s: attempt %d of %d failed (%s); retrying", url, attempt, attempts, err)
            time.sleep(min(2**attempt, 30))
    try:
        _verify(part, size, md5)
    except CorpusError:
        part.unlink()  # a complete but wrong file cannot be resumed into a right one
        raise
    part.replace(dest)
    return dest
