"""``embedserve`` command line: ``serve`` runs the server; the other subcommands are clients of it."""

from __future__ import annotations

import argparse
import asyncio
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
SECRET_FIELDS = {"auth_tokens"}  # from the environment or a file only: flags show in `ps`


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

    try:
        asyncio.run(serve(config, store))
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
    return 0


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
    actions.add_parser("list", parents=[_connection_args()])
    for action in ("describe", "delete"):
        actions.add_parser(action, parents=[_connection_args()]).add_argument("name")

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
