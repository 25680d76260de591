"""The catalog: load, schema, resolve, policy. Pure: no subprocesses, no network."""
