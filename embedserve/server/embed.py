"""EmbedService: Embed and ListModels."""

from __future__ import annotations

import json

from embedserve.models import Model
from embedserve.server import admission
from embedserve.server.base import Parts, deadline_of, rpc
from embedserve.server.contents import input_content
from embedserve.v1 import embedserve_pb2 as pb
from embedserve.v1 import embedserve_pb2_grpc as pb_grpc
from embedserve.wire import array_to_tensor


class EmbedService(pb_grpc.EmbedServiceServicer):
    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        # a loaded model never changes: its description (with the provenance as JSON, the costly
        # part) is built once, not on every call
        self._infos: dict[Model, pb.ModelInfo] = {}

    @rpc("Embed", admit=admission.embed)
    async def Embed(self, request: pb.EmbedRequest, context) -> pb.EmbedResponse:
        model = self.parts.model(request.model)
        inputs = [input_content(inp, i) for i, inp in enumerate(request.inputs)]
        # alone in flight, nothing waits for the event loop: a small model's run may happen on it
        embedded = await model.encode(inputs, deadline=deadline_of(context), inline=self.parts.in_flight == 1)
        return pb.EmbedResponse(
            model=model.name, embeddings=array_to_tensor(embedded.vectors), truncated=embedded.truncated
        )

    @rpc("ListModels")
    async def ListModels(self, request: pb.ListModelsRequest, context) -> pb.ListModelsResponse:
        registry = self.parts.registry
        infos = []
        for m in registry.list():
            info = self._infos.get(m)
            if info is None:
                info = self._infos[m] = model_info(m)
            infos.append(info)
        return pb.ListModelsResponse(models=infos, default_model=registry.default_name)


def model_info(model: Model) -> pb.ModelInfo:
    m = model.manifest
    towers = []
    for modality, tower in sorted(model.towers.items()):
        info = pb.TowerInfo(
            modality=modality,
            execution_provider=tower.execution_provider,
            providers=tower.providers,
            max_batch_size=tower.max_batch_size,
        )
        if m.image is not None and modality == "image":
            info.channels = m.image.channels
            info.size.extend(m.image.size)
        elif m.text is not None:
            info.max_length = m.text.max_length
            info.vocab_size = tower.vocab_size
        towers.append(info)
    return pb.ModelInfo(
        name=m.name,
        version=str(m.version),
        dim=m.dim,
        metric=m.metric.value,
        normalize=m.normalize,
        towers=towers,
        provenance_json=json.dumps(m.provenance, sort_keys=True),
        path=str(m.path),
    )
