"""The service in a subprocess on a loopback port, configured by environment: what
``carelens bench api``, ``carelens bench first-answer`` and ``carelens chaos`` drive."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServiceProcess:
    """``uvicorn serving.app:create_app --factory`` on loopback, configured by env."""

    def __init__(self, model_dir: Path, workdir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.admin_key = "clk_bench_" + secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "service.log"
        full_env = {
            **os.environ,
            "CARELENS_MODEL_DIR": str(model_dir),
            "CARELENS_DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}",
            "CARELENS_BOOTSTRAP_ADMIN_KEY": self.admin_key,
            "CARELENS_FOLLOW_REGISTRY": "false",
            "HF_HUB_OFFLINE": "1",
            **env,
        }
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "serving.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(cmd, env=full_env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 180.0) -> dict[str, Any]:
        import httpx

        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the service exited ({self.proc.returncode}); its log: {self.log_path}"
                )
            try:
                r = httpx.get(self.url + "/readyz", timeout=2)
                if r.status_code == 200:
                    return r.json()
                last = r.text
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.5)
        raise RuntimeError(f"the service was not ready in {timeout:.0f} s: {last}")

    def create_key(self, role: str) -> str:
        import httpx

        r = httpx.post(
            self.url + "/v1/keys",
            json={"name": f"bench-{role}", "role": role},
            headers={"X-API-Key": self.admin_key},
            timeout=10,
        )
        r.raise_for_status()
        return r.json()["key"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
