"""The snapshot agent: raft snapshots of the cluster, uploaded to S3, verified, retained.

One run (:meth:`SnapshotAgent.take`) finds the active node, logs in with the
Kubernetes auth method as ``vaultdr-snapshot`` (a token that may only read
``sys/storage/raft/snapshot``), streams ``GET sys/storage/raft/snapshot`` to a
private temporary file, checks that it is a real snapshot (a gzipped tar whose
``meta.json`` gives the raft index and term and whose ``SHA256SUMS`` matches its
members), uploads it in one ``PutObject`` to
``<prefix>/<cluster_id>/<YYYYMMDDTHHMMSS.ffffffZ>.snap`` with SSE-KMS and its
facts as object metadata (``sha256``, ``size``, ``engine``, ``engine-version``,
``raft-index``, ``raft-term``, ``cluster-id``, ``cluster-name``, ``taken-at``),
reads the object back (HeadObject) to confirm size and sha256, applies retention
and writes a JSON status file. :meth:`SnapshotAgent.run_forever` repeats that on
an interval; a failed run is logged and recorded, never fatal.

Readers (``vaultdr snapshot list|verify``, the restore agent) use
:func:`list_snapshots`, :func:`verify_snapshot` and :func:`latest_verified`,
which download and check every byte against the metadata before trusting it.

The modules, bottom to top: :mod:`.format` (what a raft snapshot file is, and
checking one), :mod:`.store` (S3: key names, listing, verifying, uploading,
metadata, retention), :mod:`.agent` (the agent, its loop and status file).
Every public name is re-exported here; import from ``vaultdr.agents.snapshot``.

This package runs in the local supervisor and, unchanged, in a container in
Kubernetes: it must never import ``vaultdr.envs`` (the layers contract in
pyproject.toml enforces it).

Hazards:

* A snapshot is the whole dataset (barrier-encrypted, but still every secret):
  temporary files are created 0600 in ``work_dir`` and removed after each run;
  verified downloads are kept only when the caller asks (``keep=True``).
* The Vault token and the service-account JWT are never logged, written to the
  status file or put into an error; failure texts are also scrubbed of both.
  The token is revoked (``auth/token/revoke-self``) at the end of every run.
* An upload that fails or does not read back identically has every version of
  its key deleted, so no partial object is left. Readers must still verify the
  sha256 of what they download: metadata alone proves nothing.
* Retention deletes *every version* of a key (the bucket is versioned), which
  cannot be undone. It only ever considers timestamp-named ``.snap`` keys
  directly under ``<prefix>/<cluster_id>/`` and always keeps the newest.
* Key names and day buckets use the agent host's UTC clock: a skewed clock
  skews retention.
* The engine (``openbao``/``vault``) is inferred from ``sys/health``: HashiCorp
  Vault reports an ``enterprise`` field, OpenBao does not.
* Two agents writing one status file (a ``snapshot now`` during the loop) may
  lose a ``runs`` increment; the file itself is always whole (atomic rename).
"""

from vaultdr.agents.snapshot.agent import (
    SnapshotAgent,
    SnapshotRecord,
    SnapshotSettings,
    describe_error,
    describe_status,
    engine_of,
    format_age,
    next_due,
    read_status,
    sse_kms_key_id,
)
from vaultdr.agents.snapshot.format import (
    GZIP_MAGIC,
    SnapshotError,
    SnapshotFile,
    SnapshotFormatError,
    hash_file,
    inspect_snapshot,
    read_snapshot_meta,
)
from vaultdr.agents.snapshot.store import (
    SNAPSHOT_SUFFIX,
    STAMP_FORMAT,
    SnapshotInfo,
    VerifyResult,
    apply_retention,
    cluster_prefix,
    discard_snapshot,
    download_verified,
    enforce_retention,
    format_stamp,
    latest_verified,
    list_snapshots,
    parse_key_time,
    plan_retention,
    snapshot_key,
    snapshot_metadata,
    upload_snapshot,
    verify_snapshot,
)

__all__ = [
    "GZIP_MAGIC",
    "SNAPSHOT_SUFFIX",
    "STAMP_FORMAT",
    "SnapshotAgent",
    "SnapshotError",
    "SnapshotFile",
    "SnapshotFormatError",
    "SnapshotInfo",
    "SnapshotRecord",
    "SnapshotSettings",
    "VerifyResult",
    "apply_retention",
    "cluster_prefix",
    "describe_error",
    "describe_status",
    "discard_snapshot",
    "download_verified",
    "enforce_retention",
    "engine_of",
    "format_age",
    "format_stamp",
    "hash_file",
    "inspect_snapshot",
    "latest_verified",
    "list_snapshots",
    "next_due",
    "parse_key_time",
    "plan_retention",
    "read_snapshot_meta",
    "read_status",
    "snapshot_key",
    "snapshot_metadata",
    "sse_kms_key_id",
    "upload_snapshot",
    "verify_snapshot",
]
