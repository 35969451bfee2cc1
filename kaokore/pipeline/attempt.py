"""One HTTP attempt at one image, and what its answer says about the image and its host.

Every wrong answer counts against its host; those that asking again would only repeat
(a refusal such as 403 or 404, a redirect loop, a body over the size cap or that does not
decompress, a placeholder) are final for the image at once.
"""
from __future__ import annotations

from collections.abc import Callable

import requests

from ..dataset.metadata import sha256
from ..storage.records import ManifestRow
from ..storage.store import PathError, write_image
from .normalize import ImageTooLarge, NotAnImage, NotDecodable, normalize
from .records import Attempt, Kind, RetryPolicy, Task, Trouble
from .session import TLS_HINT, HttpOptions, get_body
from .transport import TRANSPORT_ERRORS, Diagnosis, diagnose, diagnose_status, retry_after


def attempt(session: requests.Session, task: Task, options: HttpOptions, policy: RetryPolicy,
            layout: str, claim: Callable[[Task, str], str] | None = None) -> Attempt:
    """One request for one image, and everything that follows from its answer.

    `claim` (`HostScheduler.claim`) is asked before the image is written whether its bytes
    are a placeholder's; it returns why not to keep them, or "".
    """
    task.attempts += 1
    try:
        response = get_body(session, task.item.url, options)
    except TRANSPORT_ERRORS as exc:
        return _failed(task, policy, diagnose(exc, task.host), exc)
    if response.status != 200:
        return _failed(task, policy, diagnose_status(response.status), None, retry_after(task.state, response))
    try:
        image = normalize(response.body)
    except ImageTooLarge as exc:
        return Attempt(error=f"image too large: {exc}", kind=Kind.IMAGE_TOO_LARGE, trouble=Trouble.BAD_ANSWER,
                       conclusive=True)
    except NotAnImage as exc:
        kind = Kind.NOT_DECODABLE if isinstance(exc, NotDecodable) else Kind.NOT_AN_IMAGE
        task.bad_bodies += 1
        if task.bad_bodies >= policy.bad_body_tries:
            return Attempt(error=str(exc), kind=kind, trouble=Trouble.BAD_ANSWER)
        return _transient(task, policy, str(exc), None, kind=kind)

    digest = sha256(image.data)
    # Before the write: a placeholder's bytes then seldom touch the disk.
    if claim is not None and (placeholder := claim(task, digest)):
        return Attempt(error=placeholder, kind=Kind.PLACEHOLDER, trouble=Trouble.PLACEHOLDER, conclusive=True)
    try:
        # A full or read-only disk raises StoreError from here: every other image would fail alike.
        write_image(task.path, task.rel_path, image.data)
    except PathError as exc:
        return Attempt(error=str(exc), kind=Kind.PATH)  # a folder squats this image's path, say: it alone fails
    row = ManifestRow.of(task.item, task.rel_path, layout, image, digest, len(image.data))
    return Attempt(row=row, digest=digest)


def _failed(task: Task, policy: RetryPolicy, failure: Diagnosis, exc: Exception | None,
            retry_after: float | None = None) -> Attempt:
    """A request that brought no image: given up on the host, final for the image, or asked again."""
    if failure.kind is Kind.UNTRUSTED:
        return Attempt(error=failure.message, kind=failure.kind,
                       fatal_host_error=f"TLS certificate not trusted; {TLS_HINT}")
    if failure.conclusive:
        return Attempt(error=failure.message, kind=failure.kind, status=failure.status, trouble=failure.trouble,
                       conclusive=True)
    return _transient(task, policy, failure.message, exc, kind=failure.kind, trouble=failure.trouble,
                      status=failure.status, retry_after=retry_after)


def _transient(task: Task, policy: RetryPolicy, error: str, exc: Exception | None, *, kind: Kind | None = None,
               trouble: Trouble | None = Trouble.BAD_ANSWER, status: int = 0,
               retry_after: float | None = None) -> Attempt:
    """A failure asking again may mend: the image waits its backoff (at least what the server asked,
    which holds for every request to the host), or fails once its retries are spent."""
    step = policy.next_try(task.state, task.item.url, exc, retry_after)
    if step is None:
        return Attempt(error=error, kind=kind, status=status, trouble=trouble)
    task.state, delay, pause = step
    return Attempt(error=error, kind=kind, status=status, retry_in=delay, trouble=trouble, host_pause=pause)
