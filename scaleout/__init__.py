"""Scale-out of one large resource: snapshots partitioned by privacy unit and the execution
backends (``local``, ``dask``) that run per-partition work. A package of its own because it
spans ingestion, quality, desensitization and products, and its optional cluster code must
not be imported by the single-machine paths."""
