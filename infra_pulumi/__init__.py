"""The Pulumi program for the pipeline: storage, queue, runner (Lambda), work pool, and the Lambda package.

`__main__.py` is the program `pulumi up` runs; each other module holds one concern. Nothing here
creates resources, reads config or starts anything at import time.
"""
