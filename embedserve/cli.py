"""``embedserve`` command line: ``serve`` runs the server; the other subcommands are clients of it."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

from embedserve.config import ServerConfig, load_config, setting_names
from embedserve.limits import Limits
from embedserve.metric import METRIC_NAMES

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}
SECRET_FIELDS = {"auth_tokens", "milvus_token"}  # from the environment or a file only: flags show in `ps`


# ----------------------------------------------------------------------------- serve
def _add_serve(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="run the gRPC server",
        description="Run the server. Flags override "
        "EMBEDSERVE_* environment variables, which override the --config TOML file.",
    )
    p.add_argument("--config", type=Path, help="TOML file with server settings")
    defaults = {f.name: f.default for f in fields(ServerConfig)} | {f.name: f.default for f in fields(Limits)}
    for name in setting_names():
        if name in SECRET_FIELDS:
            continue
        flag = "--" + name.replace("_", "-")
        if name == "models":
            p.add_argument(
                flag,
                action="append",
                help="bundle dir, or dir of bundles (repeatable); default: the bundled models/",
            )
        elif name == "insecure":
            p.add_argument(
                flag,
                action="store_const",
                const="true",
                help="allow a non-loopback --host without bearer tokens: anyone who can reach the port "
                "can read and write every collection",
            )
        else:
            p.add_argument(flag, dest=name, help=f"(default: {defaults[name]})")
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    flags = {name: getattr(args, name, None) for name in setting_names() if name not in SECRET_FIELDS}
    config = load_config(flags, config_file=args.config)
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # FAISS says at INFO, on every start, that it "could not load library with AVX2 support"
    # when the wheel has no AVX2 build: harmless (it loads the generic build), but it reads as an error
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    from embedserve.errors import EmbedServeError
    from embedserve.server.startup import opening_store

    store = opening_store(config)  # loads while the rest of the server is imported (see startup.py)
    from embedserve.server.app import serve
    from embedserve.server.loop import loop_name, run

    try:
        logging.getLogger("embedserve").info("event loop: %s", loop_name(config.event_loop))
        run(serve(config, store), config.event_loop)
    except (RuntimeError, EmbedServeError, ValueError) as err:  # bad bundle, device, default model
        logging.getLogger("embedserve").error("cannot start: %s", err)
        return 2
    return 0


# ----------------------------------------------------------------------------- clients
def _client(args):
    from embedserve.client import Client

    return Client(args.target, token=args.token, tls_ca=args.tls_ca, tls=args.tls, timeout=args.timeout)


def MessageToDict(message, **kw) -> dict:  # noqa: N802  (imported late: `serve` starts faster without it)
    from google.protobuf.json_format import MessageToDict as to_dict

    return to_dict(message, **kw)


def _print(message) -> None:
    print(json.dumps(MessageToDict(message, preserving_proto_field_name=True), sort_keys=True))


def _image_files(paths: list[Path]) -> Iterator[tuple[Path, Path]]:
    """(root, file) for every image file under the given files/directories, sorted."""
    for root in paths:
        if root.is_dir():
            for f in sorted(root.rglob("*")):
                if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                    yield root, f
        else:
            yield root.parent, root


def _queries(args) -> list:
    from embedserve.client import ById

    if args.text:
        return list(args.queries)
    if args.id:
        return [ById(q) for q in args.queries]
    return [Path(q).read_bytes() for q in args.queries]


def _embed(args) -> int:
    inputs = list(args.inputs) if args.text else [Path(p).read_bytes() for p in args.inputs]
    with _client(args) as client:
        vectors, truncated = client.embed(inputs, model=args.model, return_truncated=True)
    for i, (name, vec) in enumerate(zip(args.inputs, vectors)):
        line = {"input": name, "embedding": [round(float(x), 6) for x in vec]}
        if i in truncated:
            line["truncated"] = True
        print(json.dumps(line))
    return 0


def _index(args) -> int:
    from embedserve.client import item

    def batches():
        batch = []
        for root, path in _image_files([Path(p) for p in args.paths]):
            label = args.label
            if args.label_from_dir:
                label = path.parent.name
            batch.append(
                item(
                    str(path.relative_to(root)),
                    image=path.read_bytes(),
                    label=label,
                    metadata={"path": str(path)},
                )
            )
            if len(batch) == args.batch_size:
                yield batch
                batch = []
        for i, line in enumerate(Path(args.texts).read_text().splitlines() if args.texts else []):
            if line.strip():
                batch.append(item(f"{Path(args.texts).name}:{i}", text=line, label=args.label))
                if len(batch) == args.batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    with _client(args) as client:
        _print(client.upsert_stream(args.collection, batches()))
    return 0


def _search(args) -> int:
    with _client(args) as client:
        results = client.search(
            args.collection, _queries(args), k=args.k, label_filter=args.label_filter or ()
        )
    for q, hits in zip(args.queries, results):
        print(
            json.dumps(
                {"query": q, "hits": [MessageToDict(h, preserving_proto_field_name=True) for h in hits]}
            )
        )
    return 0


def _classify(args) -> int:
    support = []
    if args.support:
        for _, path in _image_files([Path(args.support)]):
            support.append((path.read_bytes(), path.parent.name))
        if not support:
            raise SystemExit(f"no images in class sub-folders of {args.support}")
    with _client(args) as client:
        results = client.classify(
            _queries(args),
            collection=args.collection or "",
            support=support,
            model=args.model,
            k=args.k,
            temperature=args.temperature,
        )
    for q, r in zip(args.queries, results):
        out = MessageToDict(r, preserving_proto_field_name=True)
        print(json.dumps({"query": q, **out}))
    return 0


def _collections(args) -> int:
    with _client(args) as client:
        if args.action == "create":
            _print(
                client.create_collection(
                    args.name,
                    model=args.model,
                    metric=args.metric,
                    index_spec=args.index_spec,
                    train_size=args.train_size,
                    store=args.store,
                )
            )
        elif args.action == "list":
            for info in client.list_collections():
                _print(info)
        elif args.action == "describe":
            _print(client.describe_collection(args.name))
        elif args.action == "delete":
            client.delete_collection(args.name)
            print(json.dumps({"deleted": args.name}))
        elif args.action == "import":
            try:
                from embedserve.batch.importer import import_parquet
            except ModuleNotFoundError as err:
                raise SystemExit(
                    f"collections import needs pyarrow: pip install 'embedserve[batch]' ({err})"
                ) from None
            _print(
                import_parquet(
                    client, args.name, args.directory, model=args.model, batch_size=args.batch_size
                )
            )
    return 0


# ----------------------------------------------------------------------------- label
def _write_csv(path: str | None, header: list[str], rows) -> int:
    """Write ``header`` and ``rows`` as CSV to ``path`` (stdout for None or "-"); rows written."""
    import csv

    out = open(path, "w", newline="") if path and path != "-" else sys.stdout
    try:
        writer = csv.writer(out)
        writer.writerow(header)
        n = 0
        for row in rows:
            writer.writerow(row)
            n += 1
        out.flush()
    finally:
        if out is not sys.stdout:
            out.close()
    return n


class ProgressBar:
    """One line on stderr, redrawn in place: ``stage [#####.....] done/total``."""

    WIDTH = 30

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._stage = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self._stage and self._stage:
            sys.stderr.write("\n")
        self._stage = stage
        filled = self.WIDTH * done // total if total else self.WIDTH
        bar = "#" * filled + "." * (self.WIDTH - filled)
        sys.stderr.write(f"\r{stage} [{bar}] {done}/{total}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self._stage:
            sys.stderr.write("\n")


def _label_suggest(args) -> int:
    with _client(args) as client:
        reply = client.suggest_labels(
            args.collection, args.count, strategy=args.strategy, seed=args.seed, k=args.k
        )
    rows = ((s.id, f"{s.score:.6f}", s.reason) for s in reply.suggestions)
    _write_csv(args.output, ["id", "score", "reason"], rows)
    print(json.dumps({"strategy": reply.strategy, "suggestions": len(reply.suggestions)}), file=sys.stderr)
    return 0


def _read_assignments(path: str) -> list[tuple[str, str]]:
    """(id, label) pairs from a CSV with an ``id`` and a ``label`` column (by header), or the
    first two columns of a file without that header; an empty label clears it."""
    import csv

    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    rows = [r for r in csv.reader(text.splitlines()) if r]
    if not rows:
        return []
    head = [c.strip().lower() for c in rows[0]]
    if "id" in head and "label" in head:
        at, lab = head.index("id"), head.index("label")
        rows = rows[1:]
    else:
        at, lab = 0, 1
    out = []
    for n, row in enumerate(rows):
        if len(row) <= max(at, lab):
            raise ValueError(
                f"{path}: row {n + 1} has no label column (write id,label; an empty label clears)"
            )
        out.append((row[at], row[lab]))
    return out


def _label_set(args) -> int:
    pairs = _read_assignments(args.file)
    totals = {"labelled": 0, "cleared": 0, "unchanged": 0}
    with _client(args) as client:
        for start in range(0, len(pairs), args.batch_size):
            reply = client.set_labels(args.collection, pairs[start : start + args.batch_size])
            for key in totals:
                totals[key] += getattr(reply, key)
    print(json.dumps(totals))
    return 0


def _label_predict(args) -> int:
    bar = ProgressBar(args.progress if args.progress is not None else sys.stderr.isatty())
    try:
        with _client(args) as client:
            stream = client.propagate_labels(
                args.collection,
                args.method,
                k=args.k,
                temperature=args.temperature,
                alpha=args.alpha,
                max_iterations=args.max_iterations,
                write_back=args.write_back,
                on_progress=bar,
                timeout=None,
            )
            rows = ((p.id, p.label, f"{p.confidence:.6f}", f"{p.margin:.6f}") for p in stream)
            n = _write_csv(args.output, ["id", "label", "confidence", "margin"], rows)
    finally:
        bar.close()
    print(json.dumps({"predicted": n, "written_back": args.write_back}), file=sys.stderr)
    return 0


def _label_audit(args) -> int:
    with _client(args) as client:
        findings = client.audit_labels(args.collection, args.count, k=args.k, temperature=args.temperature)
    rows = ((f.id, f.label, f.suggested_label, f"{f.score:.6f}") for f in findings)
    _write_csv(args.output, ["id", "label", "suggested_label", "score"], rows)
    return 0


def _add_label(sub) -> None:
    p = sub.add_parser("label", help="label a collection from a few labels: suggest, set, predict, audit")
    actions = p.add_subparsers(dest="action", required=True)
    conn = [_connection_args()]

    def output(q) -> None:
        q.add_argument("collection")
        q.add_argument("-o", "--output", help="CSV file to write (default: stdout)")

    q = actions.add_parser("suggest", parents=conn, help="items to label next (CSV: id,score,reason)")
    output(q)
    q.add_argument("-n", "--count", type=int, default=10)
    q.add_argument("--strategy", default="auto", choices=["auto", "typical", "uncertain", "random"])
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("-k", type=int, default=0, help="graph neighbours (default 7)")
    q.set_defaults(func=_label_suggest)

    q = actions.add_parser("set", parents=conn, help="label stored items by id from a CSV (id,label)")
    q.add_argument("collection")
    q.add_argument("file", help="CSV with id and label columns ('-' = stdin); an empty label clears it")
    q.add_argument("--batch-size", type=int, default=10_000)
    q.set_defaults(func=_label_set)

    q = actions.add_parser(
        "predict",
        parents=conn,
        help="a predicted label per unlabelled item (CSV: id,label,confidence,margin)",
    )
    output(q)
    q.add_argument("--method", default="spread", choices=["spread", "knn"])
    q.add_argument("-k", type=int, default=0, help="spread: graph neighbours (7); knn: voters (20)")
    q.add_argument("--temperature", type=float, default=0.0, help="knn vote temperature (default 0.07)")
    q.add_argument("--alpha", type=float, default=0.0, help="spread: how far labels travel (default 0.99)")
    q.add_argument(
        "--max-iterations",
        type=int,
        default=0,
        help="spread: the most iterations (default 100; it stops once predictions settle)",
    )
    q.add_argument(
        "--write-back", action="store_true", help="store predictions as predicted_label/confidence"
    )
    q.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: on a terminal)",
    )
    q.set_defaults(func=_label_predict)

    q = actions.add_parser(
        "audit",
        parents=conn,
        help="labels the neighbours disagree with (CSV: id,label,suggested_label,score)",
    )
    output(q)
    q.add_argument("-n", "--count", type=int, default=10)
    q.add_argument("-k", type=int, default=0, help="labelled neighbours voting (default 20)")
    q.add_argument("--temperature", type=float, default=0.0)
    q.set_defaults(func=_label_audit)


def _health(args) -> int:
    with _client(args) as client:
        status = client.health(args.service)
    print(status)
    return 0 if status == "SERVING" else 1


def _connection_args() -> argparse.ArgumentParser:
    """Flags every client subcommand takes (added to leaf parsers, so they may come anywhere)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--target",
        default=os.environ.get("EMBEDSERVE_TARGET", "127.0.0.1:50051"),
        help="server address (env EMBEDSERVE_TARGET)",
    )
    p.add_argument(
        "--token", default=os.environ.get("EMBEDSERVE_TOKEN"), help="bearer token (env EMBEDSERVE_TOKEN)"
    )
    p.add_argument("--tls", action="store_true", help="use TLS with the system's roots")
    p.add_argument("--tls-ca", type=Path, help="CA certificate to verify the server with (implies --tls)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per call")
    return p


def _client_parser(sub, name: str, func, **kw) -> argparse.ArgumentParser:
    p = sub.add_parser(name, parents=[_connection_args()], **kw)
    p.set_defaults(func=func)
    return p


def _add_query_args(p) -> None:
    p.add_argument("queries", nargs="+", help="image files (default), texts (--text) or ids (--id)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--text", action="store_true", help="queries are texts")
    kind.add_argument("--id", action="store_true", help="queries are ids of stored items")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedserve", description="Embedding and retrieval server.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)

    p = _client_parser(sub, "embed", _embed, help="embed image files (or texts with --text)")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--text", action="store_true", help="inputs are texts, not image files")
    p.add_argument("--model", default="", help="bundle name (default: the server's default)")

    p = _client_parser(sub, "index", _index, help="upsert image files/folders (and texts) into a collection")
    p.add_argument("collection")
    p.add_argument(
        "paths", nargs="*", help="image files or folders (searched recursively); id = relative path"
    )
    p.add_argument("--texts", help="a text file: one item per non-empty line, id = FILE:LINE")
    p.add_argument("--label", help="label for every item")
    p.add_argument("--label-from-dir", action="store_true", help="label = the image's parent folder name")
    p.add_argument("--batch-size", type=int, default=64)

    p = _client_parser(sub, "search", _search, help="nearest neighbours of queries in a collection")
    p.add_argument("collection")
    _add_query_args(p)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--label-filter", action="append", help="keep only hits with this label (repeatable)")

    p = _client_parser(
        sub, "classify", _classify, help="k-NN classification against a collection or support set"
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--collection", help="classify against this collection's labelled items")
    src.add_argument("--support", help="folder with one sub-folder of example images per label (few-shot)")
    _add_query_args(p)
    p.add_argument("--model", default="", help="support-set mode: bundle name")
    p.add_argument("-k", type=int, default=0, help="neighbours voting (default 20)")
    p.add_argument("--temperature", type=float, default=0.0, help="vote temperature (default 0.07)")

    p = sub.add_parser("collections", help="create, list, describe, delete collections")
    p.set_defaults(func=_collections)
    actions = p.add_subparsers(dest="action", required=True)
    c = actions.add_parser("create", parents=[_connection_args()])
    c.add_argument("name")
    c.add_argument("--model", default="")
    c.add_argument("--metric", default="", choices=["", *METRIC_NAMES])
    c.add_argument("--index-spec", default="", help='FAISS index_factory string (default "Flat")')
    c.add_argument("--train-size", type=int, default=0)
    c.add_argument(
        "--store", default="", choices=["", "embedded", "milvus"], help="default: milvus with --milvus-uri"
    )
    actions.add_parser("list", parents=[_connection_args()])
    for action in ("describe", "delete"):
        actions.add_parser(action, parents=[_connection_args()]).add_argument("name")
    c = actions.add_parser(
        "import", parents=[_connection_args()], help="load Parquet shards (id, vector, label, metadata)"
    )
    c.add_argument("name")
    c.add_argument("directory", metavar="PARQUET_DIR", help="folder of .parquet shards (path or URI)")
    c.add_argument("--model", default="", help="create the collection for this model (default: the shards')")
    c.add_argument("--batch-size", type=int, default=1000, help="items per UpsertStream message")

    _add_label(sub)

    p = _client_parser(sub, "health", _health, help="exit 0 if the server is SERVING")
    p.add_argument("--service", default="")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.func is _serve:  # gRPC is imported by the server once the store is loading
            return _serve(args)
        import grpc

        try:
            return args.func(args)
        except grpc.RpcError as err:
            print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
