"""File uploads: a body of one of the accepted media types, or the ``file`` part of a multipart
form, read up to a limit (413 past it, 415 for another media type) before anything is parsed."""

from __future__ import annotations

from fastapi import Request

from api.problems import ApiProblem


async def read_upload(request: Request, types: tuple[str, ...], max_bytes: int, what: str) -> bytes:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=4, max_part_size=max_bytes)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiProblem(422, f"the multipart form needs a `file` part holding the {what}")
        data = await upload.read(max_bytes + 1)
    elif media in types:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                break
            chunks.append(chunk)
        data = b"".join(chunks) if size <= max_bytes else b"x" * (max_bytes + 1)
    else:
        raise ApiProblem(415, f"send the {what} as {' or '.join(types[:2])} or as the `file` part "
                              "of multipart/form-data")
    if len(data) > max_bytes:
        raise ApiProblem(413, f"the {what} is larger than {max_bytes // 1024} KiB")
    return data
