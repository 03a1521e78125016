"""The edges: the object store (S3, local), HTTP to the upstream sites, the boto3 clients."""
