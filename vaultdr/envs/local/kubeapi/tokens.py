"""Service-account tokens: issued as RS256 JWTs, reviewed the way kube-apiserver does.

:class:`TokenAuthority` signs tokens shaped like projected service-account
tokens and verifies their signature, issuer and expiry; :func:`review_token`
is the TokenReview verdict on top of that: the audience must overlap, and the
service account must still exist with the uid in the token (so a
deleted-and-recreated account rejects its old tokens).

Hazards:

* Tokens never appear in a review's status or in exception messages: a
  failure names the reason only. Keep it that way when changing this file.
* It is not Kubernetes: no bound object references, zero expiry leeway
  (kube-apiserver allows 60 s) and ``expirationSeconds`` down to 1 s
  (kube-apiserver's minimum is 600), so expiry drills do not have to wait.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from vaultdr.envs.local.kubeapi.store import JsonObject, ServiceAccount, ServiceAccountStore

DEFAULT_TTL_SECONDS = 3600
MAX_TTL_SECONDS = 366 * 24 * 3600

#: The API group of TokenRequest and TokenReview, and where TokenReviews are posted.
AUTHN_V1 = "authentication.k8s.io/v1"
TOKENREVIEWS_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"


def key_id(public_key: rsa.RSAPublicKey) -> str:
    """The ``kid`` for ``public_key``: base64url SHA-256 of its DER SPKI, as kube-apiserver does."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


@dataclass(frozen=True)
class TokenAuthority:
    """Signs and verifies service-account tokens with one RSA key."""

    key: rsa.RSAPrivateKey
    issuer: str

    @property
    def kid(self) -> str:
        return key_id(self.key.public_key())

    def issue(
        self, account: ServiceAccount, audiences: Sequence[str], ttl_seconds: int
    ) -> tuple[str, int]:
        """A signed token for ``account`` and its expiry (Unix seconds)."""
        now = int(time.time())
        claims = {
            "aud": list(audiences),
            "exp": now + ttl_seconds,
            "iat": now,
            "nbf": now,
            "iss": self.issuer,
            "jti": str(uuid.uuid4()),
            "sub": account.username,
            "kubernetes.io": {
                "namespace": account.namespace,
                "serviceaccount": {"name": account.name, "uid": account.uid},
            },
        }
        token = jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})
        return token, now + ttl_seconds

    def verify(self, token: str) -> JsonObject:
        """The claims of ``token``; ``jwt.InvalidTokenError`` if it is not ours or is stale."""
        claims: JsonObject = jwt.decode(
            token,
            self.key.public_key(),
            algorithms=["RS256"],
            issuer=self.issuer,
            options={"verify_aud": False, "require": ["exp", "iat", "iss", "sub"]},
        )
        return claims


def _claimed_account(claims: Mapping[str, Any]) -> ServiceAccount | None:
    """The service account a verified token names, or None if its claims are malformed."""
    kube = claims.get("kubernetes.io")
    if not isinstance(kube, Mapping):
        return None
    sa = kube.get("serviceaccount")
    if not isinstance(sa, Mapping):
        return None
    fields = (kube.get("namespace"), sa.get("name"), sa.get("uid"))
    if not all(isinstance(f, str) and f for f in fields):
        return None
    account = ServiceAccount(*cast(tuple[str, str, str], fields))
    return account if claims.get("sub") == account.username else None


def _token_audiences(claims: Mapping[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    return [a for a in aud if isinstance(a, str)] if isinstance(aud, list) else []


def _review_failure(reason: str) -> JsonObject:
    return {"authenticated": False, "user": {}, "error": f"invalid bearer token, {reason}"}


def review_token(
    authority: TokenAuthority,
    store: ServiceAccountStore,
    token: str,
    audiences: Sequence[str],
) -> JsonObject:
    """The TokenReview ``status`` for ``token`` reviewed for ``audiences``."""
    try:
        claims = authority.verify(token)
    except jwt.ExpiredSignatureError:
        return _review_failure("token has expired")
    except jwt.InvalidSignatureError:
        return _review_failure("token signature is invalid")
    except jwt.InvalidTokenError as exc:
        return _review_failure(f"token is not valid ({type(exc).__name__})")
    claimed = _claimed_account(claims)
    if claimed is None:
        return _review_failure("token does not name a service account")
    token_auds = _token_audiences(claims)
    overlap = [a for a in audiences if a in token_auds]
    if not overlap:
        return _review_failure(
            f"token audiences {token_auds} is invalid for the target audiences {list(audiences)}"
        )
    current = store.get(claimed.namespace, claimed.name)
    if current is None:
        return _review_failure(
            f"service account {claimed.namespace}/{claimed.name} has been deleted"
        )
    if current.uid != claimed.uid:
        return _review_failure(
            f"service account UID ({current.uid}) does not match claim ({claimed.uid})"
        )
    return {"authenticated": True, "user": _user_info(current), "audiences": overlap}


def _user_info(account: ServiceAccount) -> JsonObject:
    return {
        "username": account.username,
        "uid": account.uid,
        "groups": [
            "system:serviceaccounts",
            f"system:serviceaccounts:{account.namespace}",
            "system:authenticated",
        ],
    }
