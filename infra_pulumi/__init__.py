"""The Pulumi program for the pipeline: storage, queue, runner (Lambda), work pool, and the Lambda package.

`__main__.py` is the program `pulumi up` runs; each other module holds one concern. Nothing here
creates resources, reads config or starts anything at import time.

Every component is built as in Pulumi's own examples, `Component(name, ComponentArgs(...), opts)`:
the inputs are one typed, frozen dataclass next to the component, so a call site names each input,
the checker sees its type (`pulumi.Input[str]` where another component's output is passed), and
`opts` (provider, parent) stays apart from what the component builds.
"""
