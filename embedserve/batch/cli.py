"""``embedserve-batch``: batch indexing on Ray Data (``pip install 'embedserve[batch]'``).

    embedserve-batch index SRC --model BUNDLE_OR_NAME
        (--to-server TARGET --collection NAME | --to-parquet DIR | --to-milvus URI --collection NAME)
        [--num-workers N] [--gpus-per-worker G] [--batch-size B] [--address ray://HOST:10001]

Without ``--address`` the job starts Ray on this machine; with it, it runs on that cluster (the
cluster's nodes need embedserve installed with the ``batch`` extra; the bundle travels with the
job). It prints a JSON summary: done, failed, skipped, seconds, items/s, and the errors file.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedserve-batch", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("index", help="embed a folder or manifest and write the vectors to a sink")
    p.add_argument(
        "source", metavar="SRC", help="image folder, or a .csv/.jsonl/.parquet manifest (path or URI)"
    )
    p.add_argument("--model", required=True, help="bundle directory, or the name of a shipped bundle")
    p.add_argument("--models", type=Path, action="append", default=[], help="look for --model names here too")
    to = p.add_mutually_exclusive_group(required=True)
    to.add_argument("--to-server", metavar="TARGET", help="a running embedserve (host:port)")
    to.add_argument("--to-parquet", metavar="DIR", help="Parquet shards (id, vector, label, metadata)")
    to.add_argument("--to-milvus", metavar="URI", help="a Milvus collection (./file.db = Milvus Lite)")
    p.add_argument("--collection", help="collection name (with --to-server and --to-milvus)")
    p.add_argument(
        "--num-workers", type=int, default=2, help="embedding actors (one ONNX Runtime session each)"
    )
    p.add_argument(
        "--gpus-per-worker", type=float, default=0.0, help="GPUs per actor (CUDA provider when > 0)"
    )
    p.add_argument(
        "--cpus-per-worker", type=float, default=1.0, help="CPUs per actor (its ONNX Runtime threads)"
    )
    p.add_argument("--batch-size", type=int, default=64, help="items per embedding batch")
    p.add_argument("--address", help="Ray cluster (ray://HOST:10001 or auto); default: Ray on this machine")
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (default: all)")
    p.add_argument(
        "--label-from-dir", action="store_true", help="folder source: label = the file's parent folder"
    )
    p.add_argument(
        "--no-resume", action="store_true", help="embed every item, even ids the sink already holds"
    )
    p.add_argument(
        "--errors", default="embedserve-batch-errors.csv", help="CSV of failed items (id, source, error)"
    )
    p.add_argument("--max-image-bytes", type=int, default=20 << 20)
    p.add_argument("--token", default=os.environ.get("EMBEDSERVE_TOKEN", ""), help="server bearer token")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--tls-ca", default="")
    p.add_argument(
        "--milvus-token",
        default=os.environ.get("EMBEDSERVE_MILVUS_TOKEN", ""),
        help="Milvus token (default: $EMBEDSERVE_MILVUS_TOKEN, as the server reads it)",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: on a terminal)",
    )
    return parser


def make_sink(args: argparse.Namespace):
    from embedserve.batch.sinks import ParquetSink, ServerSink

    if args.to_parquet:
        return ParquetSink(args.to_parquet)
    if not args.collection:
        raise ValueError("--collection is needed with --to-server and --to-milvus")
    if args.to_server:
        return ServerSink(args.to_server, args.collection, args.token, args.tls, args.tls_ca)
    from embedserve.batch.milvus_sink import MilvusSink

    return MilvusSink(args.to_milvus, args.collection, args.milvus_token)


def _index(args: argparse.Namespace) -> int:
    import ray

    from embedserve.batch.job import JobSpec, ProgressBar, run

    sink = make_sink(args)
    if not ray.is_initialized():
        if args.address:
            ray.init(address=args.address, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False  # ours is one line
    spec = JobSpec(
        source=args.source,
        model=args.model,
        sink=sink,
        num_workers=args.num_workers,
        gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker,
        batch_size=args.batch_size,
        resume=not args.no_resume,
        label_from_dir=args.label_from_dir,
        errors_path=args.errors,
        max_image_bytes=args.max_image_bytes,
        models_dirs=args.models,
    )
    bar = ProgressBar(args.progress)
    try:
        summary = run(spec, progress=bar)
    finally:
        bar.close()
    print(summary.to_json())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import pyarrow  # noqa: F401
        import ray  # noqa: F401
    except ModuleNotFoundError as err:
        print(
            f"error: embedserve-batch needs the batch extra: pip install 'embedserve[batch]' ({err})",
            file=sys.stderr,
        )
        return 2
    from embedserve.batch.sinks import SinkError
    from embedserve.batch.sources import SourceError
    from embedserve.errors import BundleError

    try:
        return _index(args)
    except (SinkError, SourceError, BundleError, ValueError, OSError) as err:
        message = err.message if isinstance(err, BundleError) else str(err)
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
