"""AsyncClient: the same API on grpc.aio."""

import asyncio

import grpc
import numpy as np
import pytest

from embedserve.client import AsyncClient, ById, item
from tests.conftest import random_images


def test_async_client_session(server):
    async def session():
        async with AsyncClient(server.target) as c:
            assert await c.health() == "SERVING"
            images = random_images(6, seed=31)
            await c.create_collection("async-coll")
            reply = await c.upsert_stream(
                "async-coll", [[item(f"a{i}", image=b, label=str(i % 2)) for i, b in enumerate(images)]]
            )
            assert reply.upserted == 6
            vectors, hits = await asyncio.gather(
                c.embed(images[:2]), c.search("async-coll", [ById("a0")], k=2)
            )
            assert vectors.shape == (2, 16) and len(hits[0]) == 2 and hits[0][0].id != "a0"
            result = (await c.classify([images[3]], collection="async-coll", k=1))[0]
            assert result.label == "1"
            assert [g.id for g in await c.get("async-coll", ["a5"])] == ["a5"]
            assert await c.delete("async-coll", ["a5"]) == 1
            with pytest.raises(grpc.RpcError) as err:
                await c.embed([np.zeros(3).tobytes()])
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    asyncio.run(session())


def test_async_labelling_calls(server):
    async def session():
        async with AsyncClient(server.target) as c:
            await c.create_collection("async-labels")
            rng = np.random.default_rng(0)
            await c.upsert("async-labels", [item(f"v{i}", vector=rng.standard_normal(16)) for i in range(40)])
            picked = (await c.suggest_labels("async-labels", 4)).suggestions
            assert len(picked) == 4
            counts = await c.set_labels("async-labels", {s.id: f"l{j % 2}" for j, s in enumerate(picked)})
            assert counts.labelled == 4
            stages = []
            got = [
                p
                async for p in c.propagate_labels("async-labels", on_progress=lambda *p: stages.append(p[0]))
            ]
            assert len(got) == 36 and {p.label for p in got} <= {"l0", "l1"} and "spreading" in stages
            assert len(await c.audit_labels("async-labels", 2)) == 2

    asyncio.run(session())
