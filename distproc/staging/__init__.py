"""Moving job data between where it lives and the hosts.

`staging.s3` imports boto3, so it is imported only by jobs that use S3;
`is_s3_uri` lives here for everyone else.
"""


def is_s3_uri(uri: str) -> bool:
    """s3:// and https:// (S3's virtual-hosted and path styles) URIs name S3 objects."""
    return uri[:8].lower().startswith(("s3://", "https://"))
