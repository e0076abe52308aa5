"""Every acknowledged write survives kill -9; nothing half-written shows after restart."""

import signal
import threading
import time

import numpy as np

from embedserve.client import Client, item
from tests.conftest import start_subprocess_server


def _server(bundles, data, *extra):
    return start_subprocess_server(
        [
            "--models",
            str(bundles),
            "--data",
            str(data),
            "--device",
            "cpu",
            "--default-model",
            "tiny-image",
            *extra,
        ]
    )


def test_kill_9_mid_stream_loses_no_acknowledged_write(bundles, tmp_path):
    data = tmp_path / "data"
    # small log limit: snapshots (and log truncation) happen during the stream, so the kill can hit them too
    proc, target = _server(bundles, data, "--snapshot-wal-bytes", "65536")
    acked: list[int] = []  # batch numbers the server acknowledged
    deleted: list[int] = []  # deletes acknowledged
    sent_deletes: list[int] = []  # deletes sent (the kill may land after the write, before the reply)
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((20000, 16)).astype(np.float32)
    stop = threading.Event()

    def writer(offset):
        with Client(target, timeout=10) as c:
            b = offset
            while not stop.is_set() and b < 400:
                rows = range(b * 50, b * 50 + 50)
                try:
                    c.upsert(
                        "durable",
                        [
                            item(f"x{i}", vector=vecs[i], label=str(i % 7), metadata={"b": str(b)})
                            for i in rows
                        ],
                    )
                except Exception:
                    return
                acked.append(b)
                if b % 10 == 5:
                    sent_deletes.append(b * 50)
                    try:
                        c.delete("durable", [f"x{b * 50}"])
                    except Exception:
                        return
                    deleted.append(b * 50)
                b += 2

    try:
        with Client(target) as c:
            c.create_collection("durable")
            c.create_collection("durable-hnsw", index_spec="HNSW16")
            c.upsert("durable-hnsw", [item(f"h{i}", vector=vecs[i]) for i in range(500)])
        threads = [threading.Thread(target=writer, args=(o,)) for o in (0, 1)]
        for t in threads:
            t.start()
        while len(acked) < 40:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # mid-stream: writers are still sending
        proc.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join()
    finally:
        if proc.poll() is None:
            proc.kill()

    proc, target = _server(bundles, data)
    try:
        with Client(target) as c:
            count = c.describe_collection("durable").count
            expected = {f"x{i}" for b in acked for i in range(b * 50, b * 50 + 50)} - {
                f"x{i}" for i in sent_deletes
            }
            assert count >= len(expected)
            # every acknowledged item is there with its label and metadata, and findable
            ids = sorted(expected)
            got = c.get("durable", ids)
            assert [g.id for g in got] == ids
            for g in got[::97]:
                i = int(g.id[1:])
                assert g.label == str(i % 7) and g.metadata["b"] == str(i // 50)
            for i in [int(x[1:]) for x in ids[::211]]:
                assert c.search("durable", [vecs[i]], k=1)[0][0].id == f"x{i}"
            # acknowledged deletes stay deleted
            if deleted:
                assert c.delete("durable", [f"x{i}" for i in deleted], allow_missing=True) == 0
            # the batches in flight at the kill are all-or-nothing: 0 or 50 of their items exist
            in_flight = set(range(max(acked) + 6)) - set(acked)
            for b in in_flight:
                present = sum(_exists(c, f"x{i}") for i in range(b * 50, b * 50 + 50))
                assert present in (0, 50), f"batch {b} half-written: {present} of 50"
            assert c.describe_collection("durable-hnsw").count == 500
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_sigterm_flushes_and_restart_keeps_everything(bundles, tmp_path):
    data = tmp_path / "data"
    proc, target = _server(bundles, data)
    vecs = np.random.default_rng(1).standard_normal((300, 16)).astype(np.float32)
    try:
        with Client(target) as c:
            c.create_collection("graceful", index_spec="IVF4,Flat", train_size=200)
            c.upsert("graceful", [item(f"g{i}", vector=vecs[i]) for i in range(300)])
            c.delete("graceful", ["g0"])
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    proc, target = _server(bundles, data)
    try:
        with Client(target) as c:
            info = c.describe_collection("graceful")
            assert info.count == 299 and info.trained
            assert c.search("graceful", [vecs[5]], k=1, nprobe=4)[0][0].id == "g5"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def _exists(client, ident):
    import grpc

    try:
        client.get("durable", [ident])
        return True
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.NOT_FOUND
        return False
