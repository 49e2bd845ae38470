"""The one wrapper around boto3: IAM, KMS, S3, SSM and STS calls, with errors vaultdr understands.

Every other module talks to AWS (real, or the local moto emulator) through :class:`Aws`;
this package is the only code that imports ``boto3``/``botocore``, one module per AWS
area (:mod:`.iam`, :mod:`.kms`, :mod:`.s3`, :mod:`.ssm`, :mod:`.sts`) over the plumbing
of :mod:`._base`. Each method is one AWS API
call (or one paginated listing), named ``verb_noun``, and its docstring names the API.

Errors: a refused or failed call raises :class:`~vaultdr.errors.AccessDenied` when IAM
denied it and :class:`~vaultdr.errors.AwsError` otherwise, naming the service, the
operation and the resource. An endpoint that does not answer fails within seconds
(short connect/read timeouts, few retries) instead of hanging a drill.

Hazards:

* Messages never carry a secret value. Calls whose parameters carry one (SSM
  ``PutParameter``, KMS ``Encrypt``/``Decrypt``, ``CreateAccessKey``'s answer) drop the
  AWS-provided message, which may echo parameters, and do not chain the original
  exception, whose text may hold them.
* ``AwsTarget.credentials = None`` means boto3's default chain (environment, profile,
  instance role): right for real AWS, wrong for the emulator, which is why the local
  environment always passes explicit credentials.
* A secret read from SSM is returned as ``str``: the caller must keep it out of logs,
  reports and exceptions.
"""

from __future__ import annotations

from vaultdr.aws._base import AwsCredentials, AwsTarget
from vaultdr.aws.iam import IamCalls
from vaultdr.aws.kms import KmsCalls
from vaultdr.aws.s3 import S3Calls
from vaultdr.aws.ssm import SsmCalls
from vaultdr.aws.sts import StsCalls

__all__ = ["Aws", "AwsCredentials", "AwsTarget"]


class Aws(IamCalls, KmsCalls, S3Calls, SsmCalls, StsCalls):
    """AWS API calls for one target; clients are created on first use and reused (thread-safe).

    ``connect_timeout``/``read_timeout`` are per socket operation; ``max_attempts`` counts
    the first try (1 = never retry, which a caller that must know exactly how many
    requests reached the server uses).
    """
