"""Whatever a client sends, every RPC answers a typed code: never INTERNAL or UNKNOWN.

Requests that do not decode, and random but well-formed requests built from the
proto descriptors (extreme numbers, empty and huge strings, garbage and real
images, bad tensors, names of real and missing collections), go to every RPC of
every service over a real channel. Bounded to a few seconds, seeded.
"""

import random
import time

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor, message_factory
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from embedserve.client import item
from embedserve.v1 import embedserve_pb2 as pb
from tests.conftest import encode_image

FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
FUZZ_SECONDS = 8.0
UNDECODABLE = [
    b"\xff\xff\xff\xff",  # a truncated varint tag
    b"\x0a\x05\xff\xfe\xfd\xfc\xfb",  # field 1 as a string that is not UTF-8
    b"\x0a\x64abc",  # a length running past the end
]


def methods():
    """(path, method descriptor) for every RPC the server exposes, health and reflection included."""
    services = list(pb.DESCRIPTOR.services_by_name.values())
    services.append(health_pb2.DESCRIPTOR.services_by_name["Health"])
    services.append(reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"])
    return [(f"/{s.full_name}/{m.name}", m) for s in services for m in s.methods]


def call(channel, path, method, payload, timeout=5.0):
    """Send ``payload`` (bytes, or a list of bytes for a client stream); the status code."""
    kw = dict(request_serializer=None, response_deserializer=None)
    try:
        if method.client_streaming and method.server_streaming:
            list(channel.stream_stream(path, **kw)(iter(payload), timeout=timeout))
        elif method.client_streaming:
            channel.stream_unary(path, **kw)(iter(payload), timeout=timeout)
        elif method.server_streaming:
            for _ in channel.unary_stream(path, **kw)(payload, timeout=0.3 if "Watch" in path else timeout):
                pass
        else:
            channel.unary_unary(path, **kw)(payload, timeout=timeout)
    except grpc.RpcError as err:
        return err.code(), err.details()
    return grpc.StatusCode.OK, ""


@pytest.fixture(scope="module")
def fuzz_target(server):
    with server.client() as c:
        rng = np.random.default_rng(0)
        for name, spec in (("fz-flat", "Flat"), ("fz-hnsw", "HNSW16"), ("fz-ivf", "IVF4,Flat")):
            c.create_collection(name, index_spec=spec, train_size=40 if "IVF" in spec else 0)
            vectors = rng.standard_normal((60, 16)).astype(np.float32)
            c.upsert(name, [item(f"i{j}", vector=v, label=f"c{j % 3}") for j, v in enumerate(vectors)])
    return server


def test_undecodable_requests_are_invalid_argument_on_every_rpc(fuzz_target):
    registry = fuzz_target.server.metrics.registry
    with grpc.insecure_channel(fuzz_target.target) as channel:
        for path, method in methods():
            cls = message_factory.GetMessageClass(method.input_type)
            for garbage in UNDECODABLE:
                payload = [garbage] if method.client_streaming else garbage
                code, details = call(channel, path, method, payload)
                try:
                    cls.FromString(garbage)  # a message with no string field 1 takes UNDECODABLE[1]
                except Exception:
                    assert code == grpc.StatusCode.INVALID_ARGUMENT, (path, code, details)
                    assert "not a valid" in details, details
                else:
                    assert code not in FORBIDDEN, (path, code, details)
    # counted like any other error, under the RPC's own name
    for rpc in ("Search", "UpsertStream", "Check", "ServerReflectionInfo"):
        got = registry.get_sample_value("embedserve_requests_total", {"rpc": rpc, "code": "INVALID_ARGUMENT"})
        assert got and got >= len(UNDECODABLE), rpc


class RandomRequests:
    """Random protobuf messages for a method's input type, biased towards edge values."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        png = encode_image(np.random.default_rng(seed).integers(0, 256, (8, 8)))
        good = np.random.default_rng(seed).standard_normal(16).astype("<f4").tobytes()
        self.strings = [
            "", "fz-flat", "fz-hnsw", "fz-ivf", "missing", "tiny-image", "tiny-text", "tiny-clip",
            "i1", "i7", "c0", "a text", "x" * 300, "é" * 70, "\x00", "Flat", "HNSW0", "IVF0,Flat",
            "cosine", "l2", "bogus", "  ", "IVF30000000,Flat", "embedserve.v1.SearchService",
        ]  # fmt: skip
        self.bytes_ = [
            b"", png, b"GIF89a\x00garbage", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, good,
            np.full(16, 1e30, "<f4").tobytes(), np.full(16, np.nan, "<f4").tobytes(), b"\x00" * 7,
            np.zeros(16, "<f4").tobytes(),
        ]  # fmt: skip
        self.ints = [0, 1, -1, 3, 16, 20, 1024, 1025, 2**31 - 1, -(2**31), 10**6]
        self.floats = [0.0, -1.0, 0.07, 1e-30, 1e30, float("nan"), float("inf"), -float("inf")]

    def message(self, desc: descriptor.Descriptor, depth: int = 0):
        msg = message_factory.GetMessageClass(desc)()
        for field in desc.fields:
            if self.rng.random() < (0.15 if depth == 0 else 0.45):  # requests mostly name their target
                continue
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                target = getattr(msg, field.name)
                for _ in range(self.rng.choice([1, 2, 70])):
                    target[self.rng.choice(self.strings)] = self.rng.choice(self.strings)
                continue
            repeated = field.is_repeated
            count = self.rng.choice([0, 1, 2, 3, 40]) if repeated else 1
            values = [self.value(field, depth) for _ in range(count)]
            values = [v for v in values if v is not None]
            if not values:
                continue
            if field.message_type is not None:
                if repeated:
                    for v in values:
                        getattr(msg, field.name).add().CopyFrom(v)
                else:
                    getattr(msg, field.name).CopyFrom(values[0])
            elif repeated:
                getattr(msg, field.name).extend(values)
            else:
                setattr(msg, field.name, values[0])
        return msg

    def value(self, field: descriptor.FieldDescriptor, depth: int):
        t = field.type
        if t == field.TYPE_MESSAGE:
            return self.message(field.message_type, depth + 1) if depth < 3 else None
        if t == field.TYPE_STRING:
            return self.rng.choice(self.strings)
        if t == field.TYPE_BYTES:
            return self.rng.choice(self.bytes_)
        if t == field.TYPE_BOOL:
            return self.rng.random() < 0.5
        if t in (field.TYPE_FLOAT, field.TYPE_DOUBLE):
            return self.rng.choice(self.floats)
        if t == field.TYPE_ENUM:
            return self.rng.choice(field.enum_type.values).number
        value = self.rng.choice(self.ints)
        if t in (field.TYPE_UINT32, field.TYPE_UINT64, field.TYPE_FIXED32, field.TYPE_FIXED64):
            value = abs(value)
        if t in (field.TYPE_INT32, field.TYPE_SINT32, field.TYPE_SFIXED32, field.TYPE_UINT32):
            value = max(min(value, 2**31 - 1), -(2**31))
        return value


def test_random_requests_never_get_internal_or_unknown(fuzz_target):
    gen = RandomRequests(seed=1234)
    targets = [(path, m) for path, m in methods() if not path.endswith("/Watch")]  # Watch never ends
    seen: dict[str, int] = {}
    bad = []
    deadline = time.monotonic() + FUZZ_SECONDS
    n = 0
    with grpc.insecure_channel(fuzz_target.target) as channel:
        while time.monotonic() < deadline:
            path, method = targets[n % len(targets)]
            n += 1
            if path.endswith("/DeleteCollection") and gen.rng.random() < 0.7:
                continue  # keep the fuzzed collections around for the other RPCs most of the time
            messages = [gen.message(method.input_type) for _ in range(gen.rng.choice([1, 2, 3]))]
            payload = [m.SerializeToString() for m in messages]
            code, details = call(channel, path, method, payload if method.client_streaming else payload[0])
            seen[code.name] = seen.get(code.name, 0) + 1
            if code in FORBIDDEN:
                bad.append((path, code, details, messages[0]))
        print(f"{n} requests: {seen}")
        assert not bad, bad[:3]
        assert n > 200, n  # the bound is time: make sure it exercised something
        assert {"OK", "INVALID_ARGUMENT", "NOT_FOUND"} <= set(seen), seen
        # and the server still serves
        health = channel.unary_unary(
            "/grpc.health.v1.Health/Check", request_serializer=None, response_deserializer=None
        )
        assert health_pb2.HealthCheckResponse.FromString(health(b"", timeout=5)).status == 1
    samples = fuzz_target.server.metrics.registry.collect()
    codes = {
        s.labels.get("code") for m in samples for s in m.samples if s.name == "embedserve_requests_total"
    }
    assert not codes & {"INTERNAL", "UNKNOWN"}, codes
