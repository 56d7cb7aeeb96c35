"""The dashboard's HTTP server: uvicorn in a thread of the service process.

It shares nothing with the runner but the database (its own connection per request) and
reads the engine's GPU memory for /metrics; if it fails (the port is taken), the error is
logged and the factory keeps running without it: the folder workflow never depends on it.
"""

from __future__ import annotations

import logging
import threading

import uvicorn

from ..config import Config
from .app import create_app

log = logging.getLogger(__name__)


class WebServer:
    def __init__(self, config: Config) -> None:
        web = config.web
        settings = uvicorn.Config(create_app(config), host=web.host, port=web.port, log_level="warning",
                                  access_log=False, lifespan="off", server_header=False)
        self._server = uvicorn.Server(settings)
        self._thread = threading.Thread(target=self._serve, name="web", daemon=True)
        self.url = f"http://{web.host}:{web.port}/"

    def start(self) -> None:
        self._thread.start()

    def _serve(self) -> None:
        try:
            self._server.run()
        except SystemExit:  # uvicorn exits when it cannot listen; it has logged why
            pass
        if not self._server.started:
            log.error("the dashboard could not start on %s (is the port taken? see web.port); "
                      "the service goes on without it", self.url)

    def stop(self, timeout: float = 5.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
