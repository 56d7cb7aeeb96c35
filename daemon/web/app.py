"""The dashboard's pages and actions (Starlette), rendered on the server with Jinja2.

Live parts of a page are HTML fragments that ``static/live.js`` re-fetches every second or two
and swaps in; every button is a plain form POST answered by a redirect, so the pages also work
without JavaScript. Each request opens its own :class:`Store` (SQLite connections are cheap and
must not be shared between threads); the endpoints are plain functions, which Starlette runs
in its thread pool, so the event loop never waits on the database or the disk.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from .. import operations, slot_status
from ..config import Config
from ..overview import overview
from ..progress import format_duration, iso
from ..states import BUSY_STATES, FINAL_STATES, RETRYABLE, WAITING_STATES, JobState, TaskState
from ..store import Store, StoreError
from . import files, upload
from .auth import COOKIE, SESSION_S, Auth, Guard
from .metrics import render_metrics
from .zipstream import content_disposition, zip_stream

HERE = Path(__file__).parent
DEFAULT_PREVIEW_S = 5
"""The length the "Preview" buttons offer (the upload page's shorter choice)."""
PLAYABLE = (".mp4", ".webm", ".mov", ".m4a", ".wav", ".mp3", ".jpg", ".jpeg", ".png", ".txt", ".log")


def create_app(config: Config) -> Starlette:
    """The ASGI app for one configuration (the service starts it, tests call it directly)."""
    dashboard = Dashboard(config)
    app = Starlette(routes=dashboard.routes())
    app.add_middleware(Guard, auth=dashboard.auth)
    return app


class Dashboard:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.auth = Auth(config.web)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        env = self.templates.env
        env.filters["duration"] = format_duration
        env.filters["iso"] = iso
        env.filters["size"] = _size
        env.globals["upload_enabled"] = config.web.upload
        env.globals.update(JobState=JobState, TaskState=TaskState, RETRYABLE=RETRYABLE, FINAL_STATES=FINAL_STATES,
                           DEFAULT_PREVIEW_S=DEFAULT_PREVIEW_S)
        env.globals["login_enabled"] = self.auth.required

    def routes(self) -> list[Route | Mount]:
        return [
            Route("/", self.index), Route("/partials/live", self.live),
            Route("/api/status", self.api_status), Route("/history", self.history),
            Route("/jobs/{job_id:int}", self.job_page), Route("/jobs/{job_id:int}/partial", self.job_partial),
            Route("/jobs/{job_id:int}/files/{place}/{rel:path}", self.job_file),
            Route("/jobs/{job_id:int}/results.zip", self.results_zip),
            Route("/jobs/{job_id:int}/preview", self.order_preview, methods=["POST"]),
            Route("/jobs/{job_id:int}/{action}", self.job_action, methods=["POST"]),
            Route("/queue/{action}", self.queue_action, methods=["POST"]),
            Route("/upload", self.upload_page), Route("/upload/start", self.upload_start, methods=["POST"]),
            Route("/upload/{upload_id}/files/{rel:path}", self.upload_file, methods=["PUT"]),
            Route("/upload/{upload_id}/finish", self.upload_finish, methods=["POST"]),
            Route("/login", self.login, methods=["GET", "POST"]), Route("/logout", self.logout, methods=["POST"]),
            Route("/healthz", self.healthz), Route("/metrics", self.metrics),
            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        ]

    @contextlib.contextmanager
    def store(self) -> Iterator[Store]:
        db = Store(self.config.folders.database)
        try:
            yield db
        finally:
            db.close()

    def page(self, request: Request, template: str, **context: Any) -> Response:
        return self.templates.TemplateResponse(request, template, {"msg": request.query_params.get("msg"),
                                                                   **context})

    # -- the queue ------------------------------------------------------------------------

    def overview(self, db: Store, limit: int) -> dict[str, Any]:
        """The queue with its estimates, over this host's render slots."""
        return overview(db, limit=limit, slots=slot_status.capacity(self.config))

    def _live(self) -> dict[str, Any]:
        with self.store() as db:
            view = self.overview(db, limit=200)
        jobs = view["jobs"]
        return {"view": view, "slots": slot_status.read(self.config.folders.state),
                "active": [j for j in jobs if j["state"] in BUSY_STATES],
                "queued": [j for j in jobs if j["state"] in WAITING_STATES],
                "recent": [j for j in jobs if j["state"] in FINAL_STATES][:10]}

    def index(self, request: Request) -> Response:
        return self.page(request, "dashboard.html", **self._live())

    def live(self, request: Request) -> Response:
        return self.page(request, "_live.html", **self._live())

    def api_status(self, request: Request) -> Response:
        with self.store() as db:
            return JSONResponse(self.overview(db, limit=200))

    def history(self, request: Request) -> Response:
        q = request.query_params
        state = q.get("state", "")
        states = (JobState(state),) if state in FINAL_STATES else FINAL_STATES
        with self.store() as db:
            jobs = db.history(states, name=q.get("name", ""), since=_day(q.get("since")), until=_day(q.get("until")))
        return self.page(request, "history.html", jobs=jobs, states=FINAL_STATES, q=q)

    # -- one job --------------------------------------------------------------------------

    def _job(self, job_id: int) -> dict[str, Any]:
        with self.store() as db:
            try:
                job = db.job(job_id)
            except StoreError:
                raise HTTPException(404, f"There is no job {job_id}.") from None
            tasks = db.tasks(job_id)
            row = next((r for r in self.overview(db, limit=1000)["jobs"] if r["id"] == job_id), None)
        return {"job": job, "tasks": tasks, "row": row, "results": files.results(job, tasks),
                "inputs": files.inputs(job), "previews": files.previews(job), "log": files.log_tail(job),
                "final": job.state in FINAL_STATES}

    def job_page(self, request: Request) -> Response:
        return self.page(request, "job.html", **self._job(request.path_params["job_id"]))

    def job_partial(self, request: Request) -> Response:
        return self.page(request, "_job.html", **self._job(request.path_params["job_id"]))

    def job_file(self, request: Request) -> Response:
        p = request.path_params
        with self.store() as db:
            try:
                job = db.job(p["job_id"])
            except StoreError:
                raise HTTPException(404, "There is no such job.") from None
        path = files.resolve(job, p["place"], p["rel"])
        if path is None:
            raise HTTPException(404, "That file is not there (any more).")
        inline = "download" not in request.query_params and path.suffix.lower() in PLAYABLE
        return FileResponse(path, headers={"Content-Disposition": content_disposition(path.name, inline)})

    def results_zip(self, request: Request) -> Response:
        context = self._job(request.path_params["job_id"])
        entries = [(f.name, path) for _, f in context["results"]
                   if (path := files.resolve(context["job"], f.place, f.rel)) is not None]
        if not entries:
            raise HTTPException(404, "This job has no rendered videos to download yet.")
        name = f"{context['job'].name}.zip"
        return StreamingResponse(zip_stream(entries), media_type="application/zip",
                                 headers={"Content-Disposition": content_disposition(name)})

    def job_action(self, request: Request) -> Response:
        job_id, action = request.path_params["job_id"], request.path_params["action"]
        with self.store() as db:
            try:
                if action == "retry":
                    message = operations.retry(db, self.config, str(job_id))
                elif action == "cancel":
                    message = operations.cancel(db, str(job_id))
                elif action in ("up", "down"):
                    job = db.move(job_id, 1 if action == "up" else -1)
                    message = f"Job {job.id} ({job.name}) moved {action}."
                else:
                    raise HTTPException(404, f"Unknown action {action!r}.")
            except (StoreError, OSError) as exc:
                message = f"Not done: {exc}"
        return _back(request, message)

    async def order_preview(self, request: Request) -> Response:
        """"Preview N s": a clip before the renders of a waiting job, or a preview-only job made
        from a finished one's inputs (see :func:`~..operations.preview`)."""
        form = await request.form()
        try:
            seconds = float(str(form.get("seconds", DEFAULT_PREVIEW_S)))
        except ValueError:
            return _back(request, "Not done: the preview's length must be a number of seconds.")
        return await run_in_threadpool(self._order_preview, request, seconds)

    def _order_preview(self, request: Request, seconds: float) -> Response:
        with self.store() as db:
            try:
                message = operations.preview(db, self.config, str(request.path_params["job_id"]), seconds)
            except (StoreError, OSError) as exc:
                message = f"Not done: {exc}"
        return _back(request, message)

    def queue_action(self, request: Request) -> Response:
        action = request.path_params["action"]
        if action not in ("pause", "resume"):
            raise HTTPException(404, f"Unknown action {action!r}.")
        with self.store() as db:
            db.set_paused(action == "pause")
        return _back(request, "Queue paused: the running job finishes, nothing new starts."
                     if action == "pause" else "Queue resumed.")

    # -- upload ---------------------------------------------------------------------------

    def _upload_allowed(self) -> None:
        if not self.config.web.upload:
            raise HTTPException(404, "Uploads are switched off (web.upload: false).")

    def upload_page(self, request: Request) -> Response:
        self._upload_allowed()
        return self.page(request, "upload.html", default_crf=self.config.engine.defaults.crf)

    def upload_start(self, request: Request) -> Response:
        self._upload_allowed()
        return JSONResponse({"id": upload.start(self.config.folders.inbox)})

    async def upload_file(self, request: Request) -> Response:
        self._upload_allowed()
        inbox = self.config.folders.inbox
        try:
            path = await run_in_threadpool(upload.target, inbox, request.path_params["upload_id"],
                                           request.path_params["rel"])
        except upload.UploadError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        with path.open("wb") as out:
            async for chunk in request.stream():
                await run_in_threadpool(out.write, chunk)
        return JSONResponse({"stored": path.name})

    async def upload_finish(self, request: Request) -> Response:
        self._upload_allowed()
        form = await request.form()
        options: dict[str, Any] = {}
        try:
            if form.get("priority"):
                options["priority"] = int(str(form["priority"]))
            if form.get("preview_seconds"):
                options["preview_seconds"] = int(str(form["preview_seconds"]))
        except ValueError:
            return JSONResponse({"error": "Priority and preview seconds must be whole numbers."}, status_code=400)
        if form.get("preview_only"):
            options["preview_only"] = True
        engine = {k: str(form[k]) for k in ("loop", "face") if form.get(k)}
        if engine:
            options["engine"] = engine
        try:
            name = await run_in_threadpool(upload.finish, self.config.folders.inbox,
                                           request.path_params["upload_id"], str(form.get("name", "")), options)
        except upload.UploadError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"name": name, "message": f"{name!r} is in the inbox; it appears in the queue "
                                                      "once the service takes it (a few seconds)."})

    # -- login, health, metrics -----------------------------------------------------------

    async def login(self, request: Request) -> Response:
        target = request.query_params.get("next", "/")
        target = target if target.startswith("/") and not target.startswith("//") else "/"
        if request.method == "GET":
            return self.page(request, "login.html", next=target, failed=False)
        form = await request.form()
        ok = self.auth.check(token=str(form.get("token", "")), username=str(form.get("username", "")),
                             password=str(form.get("password", "")))
        if not ok:
            return self.page(request, "login.html", next=target, failed=True)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, self.auth.session_value(), max_age=SESSION_S, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    def logout(self, request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    def healthz(self, request: Request) -> Response:
        try:
            with self.store() as db:
                db.count_by_state()
        except Exception:  # noqa: BLE001 - any failure to read the database is "not healthy"
            return PlainTextResponse("database unavailable\n", status_code=503)
        return PlainTextResponse("ok\n")

    def metrics(self, request: Request) -> Response:
        with self.store() as db:
            text = render_metrics(db, self.overview(db, limit=1000), slot_status.read(self.config.folders.state))
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


def _back(request: Request, message: str) -> Response:
    """Redirect to the page the action came from, with a message to show."""
    referer = request.headers.get("referer", "/")
    path = "/" + referer.split("://", 1)[-1].partition("/")[2] if "://" in referer else "/"
    path = path.partition("?")[0]
    return RedirectResponse(f"{path}?{urlencode({'msg': message})}", status_code=303)


def _day(text: str | None) -> str | None:
    """A ``YYYY-MM-DD`` filter value, or None for anything else."""
    if text and len(text) == 10 and text[4] == text[7] == "-" and text.replace("-", "").isdigit():
        return text
    return None


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"

