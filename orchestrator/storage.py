"""The grid's storage (--storage-path): a local or NFS path, or a URI such as s3://bucket/prefix that
Ray Tune, Ray Train and the stage cache reach through pyarrow.fs.

`check_storage` runs before Ray starts and before any trial: a bucket that does not exist, missing
credentials or storage that refuses a write is one line naming the fix, not a trial failing minutes
later inside Ray. pyarrow finds credentials and the endpoint the AWS way: AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY, a profile (~/.aws), a node's IAM role; AWS_ENDPOINT_URL (or a URI query
``?endpoint_override=...``) for an S3-compatible server such as MinIO.
"""
from __future__ import annotations

import os
import uuid

import pyarrow.fs as pafs

from orchestrator.plan import GridError, is_uri


def _one_line(err: BaseException) -> str:
    """An error's text on one line (pyarrow's and botocore's messages span several)."""
    return " ".join(str(err).split())


def _aws_credentials_missing() -> str:
    """Why the AWS credential chain finds nothing (botocore's chain: the environment, ~/.aws
    files, a web identity, a container's or an instance's role), "" when it finds some or when
    that is unknown (no botocore here: pyarrow's own error then speaks at the write probe)."""
    try:
        import botocore.session   # optional: boto3/botocore come with the s3 extras, not the core install
    except ImportError:
        return ""
    try:
        found = botocore.session.get_session().get_credentials()
    except Exception as err:      # e.g. AWS_PROFILE names a profile that does not exist
        return _one_line(err)
    return "" if found is not None else "none found"


def check_storage(storage_path: str) -> None:
    """Raise GridError (one line, naming the fix) unless the grid can write its storage."""
    if not is_uri(storage_path):
        return
    try:
        fs, path = pafs.FileSystem.from_uri(storage_path)
    except (ValueError, OSError) as err:     # pyarrow's ArrowInvalid is a ValueError
        raise GridError(f"--storage-path {storage_path}: {_one_line(err)}; use a local path, "
                        "s3://bucket/prefix, gs://bucket/prefix or another URI pyarrow.fs opens") from None
    if fs.type_name == "s3":
        missing = _aws_credentials_missing()
        if missing:
            raise GridError(f"--storage-path {storage_path}: no AWS credentials ({missing}); set AWS_ACCESS_KEY_ID "
                            "and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or give the nodes an IAM role")
        bucket = path.split("/", 1)[0]
        try:
            info = fs.get_file_info(bucket)
        except OSError as err:
            raise GridError(f"--storage-path {storage_path}: cannot reach bucket {bucket!r}: "
                            f"{_one_line(err)}") from None
        if info.type == pafs.FileType.NotFound:
            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            where = f" at {endpoint}" if endpoint else ""
            raise GridError(f"--storage-path {storage_path}: bucket {bucket!r} does not exist{where}; create it "
                            f"(aws s3 mb s3://{bucket}) or name an existing one")
    probe = f"{path.rstrip('/')}/.storage-check-{uuid.uuid4().hex[:8]}"
    try:
        with fs.open_output_stream(probe) as f:
            f.write(b"ok")
        fs.delete_file(probe)
    except OSError as err:
        raise GridError(f"--storage-path {storage_path}: cannot write there ({_one_line(err)}); "
                        "check the credentials' permissions") from None


__all__ = ["check_storage"]
