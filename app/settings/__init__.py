"""The signal service's configuration models, one module per section, importable alone.

`app.config` assembles them; the runtime modules (`app.cache`, `app.ingest` ...) take their
model from here. These modules import only the standard library, pydantic, PyYAML and light
app modules, so the service's config can be checked where its runtime packages (Numba,
Redis, gRPC, the cloud clients) are not installed: the Pulumi program checks the file it
gives the service. A validator that needs a heavy package imports it when it has a value to
check.
"""
