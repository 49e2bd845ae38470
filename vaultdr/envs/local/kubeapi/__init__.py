"""A stand-in for the slice of the Kubernetes API that Vault/OpenBao kubernetes auth uses.

The local environment has no cluster, but kubernetes auth must still be real:
OpenBao parses the service-account JWT a workload presents, then asks the API
server's TokenReview endpoint whether that token is still valid. This package is
that API server, cut down to what the drills need:

* ``POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`` (TokenRequest)
  issues RS256 tokens shaped like projected service-account tokens;
* ``POST /apis/authentication.k8s.io/v1/tokenreviews`` checks signature,
  expiry, audience, and that the service account still exists with the uid in
  the token (so a deleted-and-recreated account rejects its old tokens);
* ``GET``/``POST``/``DELETE`` on service accounts, so faults can remove one;
* ``/healthz``, ``/readyz``, ``/livez`` and ``/version``.

Run it as ``python -m vaultdr.envs.local.kubeapi --dir DIR --port PORT --cert
CERT --key KEY``; :func:`start_kubeapi` does that and waits until it is healthy,
and :class:`KubeApiClient` is the admin client the rest of vaultdr uses.

State lives in ``DIR``: ``sa-signing-key.pem`` and ``admin-token`` (both 0600,
created once and reused across restarts), ``serviceaccounts.json`` (the source
of truth, re-read on every request and replaced atomically), and
``config.json`` (issuer, declared service accounts, token reviewers), written
by the caller before start. Declared service accounts that are missing from
``serviceaccounts.json`` are created at every start, like re-applying
manifests.

The modules, bottom to top: :mod:`.store` (the state directory: config,
service accounts, signing key, admin token), :mod:`.tokens` (issuing and
reviewing tokens), :mod:`.server` (the HTTPS API and ``main``), :mod:`.client`
(:class:`KubeApiClient`, :func:`start_kubeapi`). Every name is re-exported here;
import from ``vaultdr.envs.local.kubeapi``.

Hazards:

* Whoever can read ``DIR`` can mint a token for any service account: the
  signing key and admin token are the cluster's crown jewels here.
* Tokens never appear in the request log, in TokenReview responses (the
  ``spec.token`` is not echoed back, unlike kube-apiserver) or in exception
  messages. Keep it that way when changing this package.
* It is not Kubernetes: there are no namespace objects, no RBAC beyond "the
  admin token may do everything, the declared reviewers may create
  TokenReviews", no bound object references, zero expiry leeway
  (kube-apiserver allows 60 s) and ``expirationSeconds`` down to 1 s
  (kube-apiserver's minimum is 600), so expiry drills do not have to wait.
* One server per ``DIR``: writes are serialized by an in-process lock only.
* It listens on 127.0.0.1 only, over TLS only.
"""

from vaultdr.envs.local.kubeapi.client import (
    HEALTH_TIMEOUT_SECONDS,
    MODULE,
    KubeApiClient,
    start_kubeapi,
)
from vaultdr.envs.local.kubeapi.server import (
    Request,
    Response,
    ServerState,
    handle,
    load_state,
    main,
    serve,
)
from vaultdr.envs.local.kubeapi.store import (
    ADMIN_TOKEN_FILE,
    CONFIG_FILE,
    DEFAULT_ISSUER,
    SERVICE_ACCOUNTS_FILE,
    SIGNING_KEY_FILE,
    JsonObject,
    KubeApiConfig,
    ServiceAccount,
    ServiceAccountStore,
    load_or_create_admin_token,
    load_or_create_signing_key,
    read_admin_token,
)
from vaultdr.envs.local.kubeapi.tokens import (
    DEFAULT_TTL_SECONDS,
    MAX_TTL_SECONDS,
    TokenAuthority,
    key_id,
    review_token,
)

__all__ = [
    "ADMIN_TOKEN_FILE",
    "CONFIG_FILE",
    "DEFAULT_ISSUER",
    "DEFAULT_TTL_SECONDS",
    "HEALTH_TIMEOUT_SECONDS",
    "MAX_TTL_SECONDS",
    "MODULE",
    "SERVICE_ACCOUNTS_FILE",
    "SIGNING_KEY_FILE",
    "JsonObject",
    "KubeApiClient",
    "KubeApiConfig",
    "Request",
    "Response",
    "ServerState",
    "ServiceAccount",
    "ServiceAccountStore",
    "TokenAuthority",
    "handle",
    "key_id",
    "load_or_create_admin_token",
    "load_or_create_signing_key",
    "load_state",
    "main",
    "read_admin_token",
    "review_token",
    "serve",
    "start_kubeapi",
]
