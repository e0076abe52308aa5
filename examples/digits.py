"""A client session against a running server: index handwritten digits, search, classify with few labels.

    embedserve serve &                      # the default bundle, data in ./embedserve-data
    pip install scikit-learn                # only for the digits data set
    python examples/digits.py [--target 127.0.0.1:50051] [--labels-per-class 10]

Digits are sent as 8-bit grayscale PNG files, exactly as any client would send images.
"""

from __future__ import annotations

import argparse
import io

import grpc
import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from embedserve.client import ById, Client, item


def png(digit: np.ndarray) -> bytes:
    """An 8x8 digit (values 0..16) as an 8-bit grayscale PNG."""
    buf = io.BytesIO()
    Image.fromarray(np.round(digit * 255 / 16).astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--collection", default="digits")
    parser.add_argument("--labels-per-class", type=int, default=10)
    args = parser.parse_args()

    x, y = load_digits(return_X_y=True)
    x = x.reshape(-1, 8, 8)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=500, random_state=0, stratify=y)
    rng = np.random.default_rng(0)
    labelled = {
        int(i)
        for c in range(10)
        for i in rng.choice(np.flatnonzero(y_train == c), args.labels_per_class, replace=False)
    }

    with Client(args.target) as client:
        client.wait_ready()
        model = client.list_models()
        print(f"models: {[m.name for m in model.models]} (default {model.default_model})")
        try:
            client.create_collection(args.collection)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
        # every training image goes in; only a few per class carry a label
        items = [
            item(
                f"train-{i}",
                image=png(d),
                label=str(y_train[i]) if i in labelled else None,
                metadata={"split": "train"},
            )
            for i, d in enumerate(x_train)
        ]
        reply = client.upsert_stream(args.collection, (items[j : j + 256] for j in range(0, len(items), 256)))
        info = client.describe_collection(args.collection)
        print(
            f"upserted {reply.upserted} images; collection has {info.count} items, {info.labelled_count} labelled"
        )

        hits = client.search(args.collection, [png(x_test[0])], k=5)[0]
        print(f"search by image (a {y_test[0]}): " + ", ".join(f"{h.id} {h.score:.3f}" for h in hits))
        hits = client.search(args.collection, [ById("train-0")], k=3)[0]
        print(f"search by id train-0 (a {y_train[0]}): " + ", ".join(f"{h.id}" for h in hits))

        results = client.classify([png(d) for d in x_test], collection=args.collection)
        predicted = np.array([int(r.label) for r in results])
        print(
            f"k-NN with {args.labels_per_class} labels/class on {len(x_test)} test digits: "
            f"accuracy {np.mean(predicted == y_test):.1%}"
        )
        r = results[0]
        print(f"test digit 0 (a {y_test[0]}): predicted {r.label} with p={r.confidence:.2f}")


if __name__ == "__main__":
    main()
