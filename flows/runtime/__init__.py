"""The Lambda function: the handler, the SQS batch path, flow-run execution, the API key."""
