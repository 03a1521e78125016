"""Pure rules: no I/O, no Prefect, no settings. Names, errors, listing parse, sync plan, population,
report maths and format, S3/SQS events. Everything above imports this; this imports nothing above."""
