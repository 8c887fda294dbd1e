"""A real S3 API on 127.0.0.1 for the tests: moto's server mode (a dev dependency), on a free port.

Everything that speaks S3 here finds it through the standard AWS environment: pyarrow.fs (Ray
Tune's and Ray Train's checkpoints, the stage cache), boto3 (MLflow's s3 artifact store, reading
back) honour AWS_ENDPOINT_URL; MLflow also reads MLFLOW_S3_ENDPOINT_URL. The credentials are fake.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


class S3Api:
    def __init__(self):
        from moto.server import ThreadedMotoServer
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.endpoint,
                    "MLFLOW_S3_ENDPOINT_URL": self.endpoint, "AWS_EC2_METADATA_DISABLED": "true"}

    def client(self):
        import boto3
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing",
                            aws_secret_access_key="testing", region_name="us-east-1")

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        out, token = [], None
        while True:
            kw = {"Bucket": bucket, "Prefix": prefix, **({"ContinuationToken": token} if token else {})}
            page = self.client().list_objects_v2(**kw)
            out += [o["Key"] for o in page.get("Contents", [])]
            token = page.get("NextContinuationToken")
            if not token:
                return out

    def stop(self) -> None:
        self.server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """`mlflow server` with a SQLite backend and its artifacts in S3 (proxied: clients upload
    through the server), on a free port of 127.0.0.1."""

    def __init__(self, root: Path, artifacts: str, env: dict):
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = open(Path(root) / "mlflow-server.log", "w")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{Path(root).resolve() / 'mlflow.db'}",
             "--artifacts-destination", artifacts, "--workers", "1"],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True)
        import urllib.request
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=2)
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server did not start: {(Path(root) / 'mlflow-server.log').read_text()[-2000:]}")

    def stop(self) -> None:
        import signal
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self.log.close()
