"""SageMaker's API, for `distproc import`: DescribeProcessingJob by name.

boto3 enters here (as for S3 in staging.s3), and its exceptions become
SageMakerError here, each naming the job and what went wrong.
"""

from __future__ import annotations

from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from ..errors import SageMakerError

# Codes that mean the request, not the service, is at fault: exit 2.
_CLIENT_CODES = frozenset(
    {
        "ValidationException",
        "ResourceNotFound",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "ExpiredTokenException",
    }
)


def describe_processing_job(name: str, region: str | None = None, endpoint_url: str | None = None) -> dict[str, Any]:
    """SageMaker's DescribeProcessingJob answer for `name` (ResponseMetadata left out)."""
    config = botocore.config.Config(
        retries={"mode": "standard", "max_attempts": 3}, connect_timeout=10, read_timeout=60
    )
    what = f"DescribeProcessingJob {name!r}"
    try:
        client = boto3.session.Session().client(
            "sagemaker", region_name=region, endpoint_url=endpoint_url, config=config
        )
        answer: dict[str, Any] = client.describe_processing_job(ProcessingJobName=name)
    except botocore.exceptions.ClientError as exc:
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "?"))
        raise SageMakerError(
            f"{what}: {code}: {err.get('Message') or code}", client_error=code in _CLIENT_CODES
        ) from None
    except botocore.exceptions.ParamValidationError as exc:
        raise SageMakerError(f"{what}: {exc}") from None
    except botocore.exceptions.NoRegionError:
        raise SageMakerError(f"{what}: no AWS region: give --region or set AWS_REGION") from None
    except botocore.exceptions.NoCredentialsError:
        raise SageMakerError(f"{what}: no AWS credentials found") from None
    except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError) as exc:
        raise SageMakerError(f"{what}: cannot reach SageMaker ({exc})", client_error=False) from None
    except ValueError as exc:  # boto3's answer to an endpoint URL it cannot use
        raise SageMakerError(f"{what}: {exc}") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise SageMakerError(f"{what}: {exc}", client_error=False) from None
    answer.pop("ResponseMetadata", None)
    return answer
