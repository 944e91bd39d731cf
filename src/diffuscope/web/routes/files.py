"""The files a job wrote, by job id and file name only: resolved and checked to lie inside that job's folder (no
``..``, no symlink escape, no overlong name), else 404."""

from __future__ import annotations

import re

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from diffuscope.web.guard import error
from diffuscope.web.routes.jobs import JOB_ID
from diffuscope.web.state import Server

router = APIRouter()
FILE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}(/[A-Za-z0-9_.-]{1,128})?$")  # a name, or folder/name (sweep/...)


@router.get("/api/files/{job_id}/{name:path}")
def files(job_id: str, name: str, server: Server) -> Response:
    if not JOB_ID.match(job_id) or not FILE_NAME.match(name):
        return error(404, "not found")
    folder = server.out_dir / job_id
    try:
        path = (folder / name).resolve()
        ok = path.is_relative_to(folder) and path.is_file()  # resolve() followed any symlink
    except OSError:  # whatever the file system refuses (a name too long for it, a loop of links)
        ok = False
    if not ok:
        return error(404, "not found")
    png = path.suffix == ".png"
    return FileResponse(path, media_type="image/png" if png else None, filename=path.name if png else None)
