"""The development kit: loopback upstream, generated samples, the S3/SQS emulator, `quest demo`.

Never shipped in the Lambda package (infra_pulumi/package.py leaves this folder out)."""
