"""Batch indexing on Ray Data: ``embedserve-batch index`` (needs the ``batch`` extra: ray, pyarrow).

Modules: ``sources`` (folders and manifests, on any filesystem pyarrow reads), ``workers`` (the
embedding and writing stages), ``sinks`` (a running server, Parquet shards, Milvus), ``job``
(the pipeline, progress and summary), ``cli`` (the command).
"""
