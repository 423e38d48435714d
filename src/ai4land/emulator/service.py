"""The emulator as an HTTP service (FastAPI, served by uvicorn): ``ai4land serve --model M``.

One warm :class:`~ai4land.emulator.Emulator` answers requests for (scenario, bbox, years,
output): the maps (NetCDF, or a zip of a COG per year) or the fractions on a target grid
(CF NetCDF in LUH layout). The scenario is a file on the server, under a directory the
operator allowed (``--scenario-dir``), or coarse fractions uploaded with the request
(NetCDF). ``/docs`` and ``/openapi.json`` describe the API.

Bounds, so that a busy or hostile client cannot exhaust the machine:

* concurrency: at most ``max_concurrent`` predictions run at once (the model uses the
  machine's cores) and ``max_queue`` more wait; a request beyond that is answered 503
  at once, with ``Retry-After``;
* request size: bodies above ``max_upload_bytes`` are refused with 413, by their
  ``Content-Length`` or while they stream in;
* region size: bbox pixels x years above ``max_pixel_years`` are refused with 413;
  requests above ``async_pixel_years`` (or with ``mode=async``) return 202 and a job id
  at once; ``/jobs/{id}`` says how it stands and ``/jobs/{id}/result`` returns it.

Bad requests get a 4xx with a one-line ``detail`` (the emulator's own error messages).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import threading
import uuid
import zipfile
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from starlette.background import BackgroundTask

from ai4land.errors import Ai4landError

log = logging.getLogger("ai4land.emulator.service")
MEDIA = {".nc": "application/x-netcdf", ".zip": "application/zip"}


@dataclass
class Limits:
    max_concurrent: int = 1
    max_queue: int = 4
    max_upload_bytes: int = 256 * 2**20
    max_pixel_years: int = 50_000_000
    async_pixel_years: int = 10_000_000
    max_jobs: int = 64  # finished jobs whose results are kept


@dataclass
class Request:
    """One validated request (what :func:`run_request` computes)."""

    scenario: Path | None  # None until an uploaded scenario is saved
    bbox: tuple[float, float, float, float] | None
    years: list[int]
    output: str
    format: str
    grid_res: float | None = None
    grid_extent: tuple[float, float, float, float] | None = None


@dataclass
class Job:
    id: str
    status: str = "queued"
    error: str | None = None
    result: Path | None = None
    workdir: Path | None = None
    info: dict = field(default_factory=dict)


class BodyLimit:
    """ASGI middleware: request bodies above ``max_bytes`` get 413, whether they declare
    their length or stream it."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(scope, send)
        seen, started = 0, False

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await self._refuse(scope, send)

    async def _refuse(self, scope, send):
        response = JSONResponse({"detail": f"request body larger than {self.max_bytes} bytes; "
                                           "upload a smaller scenario (e.g. cut to the bbox)"},
                                status_code=413)
        await response(scope, None, send)


class _TooLarge(Exception):
    pass


def _floats(text: str | None, n: int, what: str) -> tuple[float, ...] | None:
    if text is None or text.strip() == "":
        return None
    try:
        values = tuple(float(v) for v in text.replace(" ", ",").split(",") if v)
    except ValueError:
        values = ()
    if len(values) != n:
        raise HTTPException(422, f"{what} must be {n} numbers separated by commas, got {text!r}")
    return values


def _years(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", ",").split(",") if v]
    except ValueError:
        values = []
    if len(values) == 1:
        return values
    if len(values) == 2 and values[0] <= values[1]:
        return list(range(values[0], values[1] + 1))
    raise HTTPException(
        422, f"years must be one year or 'first,last' (first <= last), got {text!r}"
    )


def run_request(emulator, request: Request, workdir: Path) -> Path:
    """Compute ``request`` into ``workdir``; the path of the file to return."""
    from ai4land.emulator.core import write_maps

    kwargs = {"bbox": request.bbox, "years": request.years}
    if request.output == "fractions":
        from ai4land.emulator.aggregate import write_fractions

        maps = emulator.predict(request.scenario, **kwargs)
        bbox = request.grid_extent or request.bbox or emulator.extent
        fractions = emulator.aggregate(maps, {"res": request.grid_res, "bbox": bbox})
        return write_fractions(fractions, workdir / "fractions.nc")
    if request.format == "netcdf":
        return write_maps(emulator.iter_years(request.scenario, **kwargs), workdir / "maps.nc")[0]
    paths = write_maps(emulator.iter_years(request.scenario, **kwargs), workdir / "maps.tif")
    archive = workdir / "maps.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        for path in paths:
            zf.write(path, path.name)
    return archive


class _Service:
    """The state behind the routes: the warm emulator, the admission and run slots, the
    async jobs and the scratch directory of request files."""

    def __init__(self, emulator, limits: Limits, scenario_dirs):
        self.emulator, self.limits = emulator, limits
        self.roots = [Path(d).resolve() for d in scenario_dirs]
        self.admission = threading.BoundedSemaphore(limits.max_concurrent + limits.max_queue)
        self.running = threading.Semaphore(limits.max_concurrent)
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.pool = ThreadPoolExecutor(limits.max_concurrent + limits.max_queue,
                                       thread_name_prefix="ai4land-job")
        self.scratch = Path(tempfile.mkdtemp(prefix="ai4land-serve-"))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self.scratch, ignore_errors=True)

    def compute(self, request: Request, workdir: Path) -> Path:
        with self.running:
            return run_request(self.emulator, request, workdir)

    def run_job(self, job: Job, request: Request) -> None:
        job.status = "running"
        try:
            job.result = self.compute(request, job.workdir)
            job.status = "done"
        except Ai4landError as exc:
            job.status, job.error = "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - a bug: reported to the client and logged
            job.status, job.error = "failed", f"internal error ({type(exc).__name__}: {exc})"
            log.exception("job %s failed", job.id)
        finally:
            self.admission.release()
            _prune(self.jobs, self.limits.max_jobs)

    def check(self, *, years: str, bbox: str | None, output: str, format: str,
              grid_res: float | None, grid_extent: str | None, scenario_path: str | None,
              upload: bool) -> tuple[Request, int]:
        """The request (its scenario None for an upload) and its pixel-years; 4xx for a
        request the service does not take."""
        box = _floats(bbox, 4, "bbox")
        extent = _floats(grid_extent, 4, "grid_extent")
        year_list = _years(years)
        if output == "fractions" and not grid_res:
            raise HTTPException(422, "output=fractions needs grid_res (degrees)")
        if output == "fractions" and format != "netcdf":
            raise HTTPException(422, "fractions are returned as NetCDF (format=netcdf)")
        if (scenario_path is None) == (not upload):
            raise HTTPException(422, "give exactly one of scenario_path (a file on the server) "
                                     "and scenario (an uploaded NetCDF)")
        region, _ = self.emulator.region(box or self.emulator.extent)
        pixel_years = region.fine_grid.width * region.fine_grid.height * len(year_list)
        if pixel_years > self.limits.max_pixel_years:
            raise HTTPException(413, f"region of {pixel_years} pixel-years exceeds the service's "
                                     f"limit of {self.limits.max_pixel_years}; split the request")
        path = None
        if scenario_path is not None:
            path = Path(scenario_path).resolve()
            if not any(path.is_relative_to(root) for root in self.roots):
                raise HTTPException(403, f"{scenario_path}: not under a scenario directory of "
                                         "this service; upload the file instead")
        request = Request(scenario=path, bbox=box, years=year_list, output=output,
                          format=format, grid_res=grid_res, grid_extent=extent)
        return request, pixel_years

    async def answer(self, request: Request, *, pixel_years: int, mode: str,
                     upload: UploadFile | None):
        """Run ``request`` (its file, or 202 and a job id), or 503 when the service is full."""
        if not self.admission.acquire(blocking=False):
            return JSONResponse({"detail": "busy: the service runs as many requests as it "
                                           "may; retry later"}, status_code=503,
                                headers={"Retry-After": "5"})
        workdir = Path(tempfile.mkdtemp(dir=self.scratch))
        queued = False
        try:
            if upload is not None:
                request.scenario = workdir / "scenario.nc"
                with open(request.scenario, "wb") as handle:
                    await run_in_threadpool(shutil.copyfileobj, upload.file, handle)
            if mode == "async" or (mode == "auto" and pixel_years > self.limits.async_pixel_years):
                response = self._queue(request, workdir)
                queued = True
                return response
            result = await run_in_threadpool(self.compute, request, workdir)
        except BaseException:
            if not queued:
                shutil.rmtree(workdir, ignore_errors=True)
            raise
        finally:
            if not queued:
                self.admission.release()
        return FileResponse(result, media_type=MEDIA[result.suffix], filename=result.name,
                            background=BackgroundTask(shutil.rmtree, workdir, True))

    def _queue(self, request: Request, workdir: Path) -> JSONResponse:
        job = Job(id=uuid.uuid4().hex, workdir=workdir,
                  info={"years": request.years, "bbox": request.bbox, "output": request.output})
        self.jobs[job.id] = job
        self.pool.submit(self.run_job, job, request)
        return JSONResponse({"job": job.id, "status": job.status,
                             "status_url": f"/jobs/{job.id}",
                             "result_url": f"/jobs/{job.id}/result"}, status_code=202)

    def job(self, job_id: str) -> Job:
        if job_id not in self.jobs:
            raise HTTPException(404, f"no job {job_id!r} (finished jobs are kept "
                                     f"{self.limits.max_jobs} at most)")
        return self.jobs[job_id]


def create_app(emulator, *, limits: Limits | None = None,
               scenario_dirs: list[str | Path] = ()) -> FastAPI:
    """The FastAPI application around a warm ``emulator``."""
    service = _Service(emulator, limits or Limits(), scenario_dirs)
    limits = service.limits

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        service.close()

    app = FastAPI(
        lifespan=lifespan,
        title="ai4land emulator",
        version=emulator.describe()["model_weights_sha256"][:12],
        description="Land-use maps (~1 km classes, harmonised with the coarse scenario) for "
                    "any LUH-format scenario, region and years, or their fractions on a "
                    "model grid. A trained ai4land model answers; see /model for what it "
                    "covers.",
    )

    @app.exception_handler(Ai4landError)
    async def _bad_input(request, exc: Ai4landError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.get("/health", summary="liveness")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/model", summary="what the model covers and needs")
    def model() -> dict:
        return emulator.describe() | {"limits": limits.__dict__}

    @app.post("/emulate", summary="maps or fractions for a scenario, region and years",
              responses={200: {"description": "the maps (NetCDF or zip of COGs) or fractions "
                                              "(NetCDF)"},
                         202: {"description": "a job id (long requests)"},
                         400: {"description": "bad input (one-line detail)"},
                         403: {"description": "scenario path outside the allowed directories"},
                         413: {"description": "request body or region too large"},
                         503: {"description": "busy: retry after Retry-After seconds"}})
    async def emulate(
        years: str = Form(..., description="one year, or 'first,last' (inclusive)"),
        bbox: str | None = Form(None, description="'west,south,east,north' (default: the "
                                                   "model's extent)"),
        output: Literal["maps", "fractions"] = Form("maps"),
        format: Literal["netcdf", "geotiff"] = Form(
            "netcdf", description="maps as one NetCDF, or a zip of a COG per year"),
        grid_res: float | None = Form(None, description="fractions: target grid resolution "
                                                        "(degrees)"),
        grid_extent: str | None = Form(None, description="fractions: target grid extent "
                                                         "'west,south,east,north' (default: bbox)"),
        mode: Literal["auto", "sync", "async"] = Form(
            "auto", description="async: answer 202 with a job id at once"),
        scenario_path: str | None = Form(None, description="scenario file on the server"),
        scenario: UploadFile | None = File(None, description="scenario upload (NetCDF, LUH "
                                                             "format)"),
    ):
        request, pixel_years = service.check(
            years=years, bbox=bbox, output=output, format=format, grid_res=grid_res,
            grid_extent=grid_extent, scenario_path=scenario_path, upload=scenario is not None)
        return await service.answer(request, pixel_years=pixel_years, mode=mode,
                                    upload=scenario)

    @app.get("/jobs/{job_id}", summary="how a job stands")
    def job_status(job_id: str) -> dict:
        job = service.job(job_id)
        return {"job": job.id, "status": job.status, "error": job.error, **job.info}

    @app.get("/jobs/{job_id}/result", summary="a finished job's file")
    def job_result(job_id: str):
        job = service.job(job_id)
        if job.status == "failed":
            raise HTTPException(400, job.error)
        if job.status != "done":
            raise HTTPException(409, f"job {job_id} is {job.status}; poll /jobs/{job_id}")
        return FileResponse(job.result, media_type=MEDIA[job.result.suffix],
                            filename=job.result.name)

    return app


def _prune(jobs: OrderedDict, keep: int) -> None:
    """Forget the oldest finished jobs (and their files) beyond ``keep``."""
    finished = [j for j in jobs.values() if j.status in ("done", "failed")]
    for job in finished[: max(0, len(finished) - keep)]:
        jobs.pop(job.id, None)
        if job.workdir is not None:
            shutil.rmtree(job.workdir, ignore_errors=True)


def serve(emulator, *, host: str = "127.0.0.1", port: int = 8000, limits: Limits | None = None,
          scenario_dirs: list[str | Path] = ()) -> None:
    """Serve the emulator with uvicorn until interrupted."""
    import uvicorn

    limits = limits or Limits()
    app = BodyLimit(create_app(emulator, limits=limits, scenario_dirs=scenario_dirs),
                    limits.max_upload_bytes)
    uvicorn.run(app, host=host, port=port, log_level="info")
