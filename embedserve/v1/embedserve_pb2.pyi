from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("shape", "data")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Input(_message.Message):
    __slots__ = ("image", "text")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    text: str
    def __init__(self, image: _Optional[bytes] = ..., text: _Optional[str] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("model", "inputs")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    inputs: _containers.RepeatedCompositeFieldContainer[Input]
    def __init__(self, model: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[Input, _Mapping]]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("model", "embeddings", "truncated")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    model: str
    embeddings: Tensor
    truncated: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, model: _Optional[str] = ..., embeddings: _Optional[_Union[Tensor, _Mapping]] = ..., truncated: _Optional[_Iterable[int]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TowerInfo(_message.Message):
    __slots__ = ("modality", "execution_provider", "providers", "max_batch_size", "channels", "size", "max_length", "vocab_size")
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    modality: str
    execution_provider: str
    providers: _containers.RepeatedScalarFieldContainer[str]
    max_batch_size: int
    channels: int
    size: _containers.RepeatedScalarFieldContainer[int]
    max_length: int
    vocab_size: int
    def __init__(self, modality: _Optional[str] = ..., execution_provider: _Optional[str] = ..., providers: _Optional[_Iterable[str]] = ..., max_batch_size: _Optional[int] = ..., channels: _Optional[int] = ..., size: _Optional[_Iterable[int]] = ..., max_length: _Optional[int] = ..., vocab_size: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "dim", "metric", "normalize", "towers", "provenance_json", "path")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    TOWERS_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_JSON_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    dim: int
    metric: str
    normalize: bool
    towers: _containers.RepeatedCompositeFieldContainer[TowerInfo]
    provenance_json: str
    path: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., dim: _Optional[int] = ..., metric: _Optional[str] = ..., normalize: _Optional[bool] = ..., towers: _Optional[_Iterable[_Union[TowerInfo, _Mapping]]] = ..., provenance_json: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "default_model")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    default_model: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., default_model: _Optional[str] = ...) -> None: ...

class CreateCollectionRequest(_message.Message):
    __slots__ = ("name", "model", "metric", "index_spec", "train_size", "store")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    INDEX_SPEC_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SIZE_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    metric: str
    index_spec: str
    train_size: int
    store: str
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., metric: _Optional[str] = ..., index_spec: _Optional[str] = ..., train_size: _Optional[int] = ..., store: _Optional[str] = ...) -> None: ...

class CollectionInfo(_message.Message):
    __slots__ = ("name", "model", "dim", "metric", "index_spec", "count", "trained", "train_size", "memory_bytes", "labelled_count", "created_at", "gpu", "predicted_count", "store", "error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    INDEX_SPEC_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TRAINED_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SIZE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    LABELLED_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    dim: int
    metric: str
    index_spec: str
    count: int
    trained: bool
    train_size: int
    memory_bytes: int
    labelled_count: int
    created_at: float
    gpu: bool
    predicted_count: int
    store: str
    error: str
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., dim: _Optional[int] = ..., metric: _Optional[str] = ..., index_spec: _Optional[str] = ..., count: _Optional[int] = ..., trained: _Optional[bool] = ..., train_size: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., labelled_count: _Optional[int] = ..., created_at: _Optional[float] = ..., gpu: _Optional[bool] = ..., predicted_count: _Optional[int] = ..., store: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections",)
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[CollectionInfo]
    def __init__(self, collections: _Optional[_Iterable[_Union[CollectionInfo, _Mapping]]] = ...) -> None: ...

class DescribeCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteCollectionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Item(_message.Message):
    __slots__ = ("id", "image", "text", "vector", "label", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    id: str
    image: bytes
    text: str
    vector: Tensor
    label: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., image: _Optional[bytes] = ..., text: _Optional[str] = ..., vector: _Optional[_Union[Tensor, _Mapping]] = ..., label: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("collection", "items")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    items: _containers.RepeatedCompositeFieldContainer[Item]
    def __init__(self, collection: _Optional[str] = ..., items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ...) -> None: ...

class UpsertResponse(_message.Message):
    __slots__ = ("upserted", "inserted", "replaced", "batches", "truncated", "truncated_ids")
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    INSERTED_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_IDS_FIELD_NUMBER: _ClassVar[int]
    upserted: int
    inserted: int
    replaced: int
    batches: int
    truncated: int
    truncated_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, upserted: _Optional[int] = ..., inserted: _Optional[int] = ..., replaced: _Optional[int] = ..., batches: _Optional[int] = ..., truncated: _Optional[int] = ..., truncated_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("collection", "ids", "allow_missing")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_MISSING_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    allow_missing: bool
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., allow_missing: _Optional[bool] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("collection", "ids", "include_vector", "allow_missing")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTOR_FIELD_NUMBER: _ClassVar[int]
    ALLOW_MISSING_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    include_vector: bool
    allow_missing: bool
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., include_vector: _Optional[bool] = ..., allow_missing: _Optional[bool] = ...) -> None: ...

class StoredItem(_message.Message):
    __slots__ = ("id", "label", "metadata", "vector", "predicted_label", "confidence")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    label: str
    metadata: _containers.ScalarMap[str, str]
    vector: Tensor
    predicted_label: str
    confidence: float
    def __init__(self, id: _Optional[str] = ..., label: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., vector: _Optional[_Union[Tensor, _Mapping]] = ..., predicted_label: _Optional[str] = ..., confidence: _Optional[float] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[StoredItem]
    def __init__(self, items: _Optional[_Iterable[_Union[StoredItem, _Mapping]]] = ...) -> None: ...

class Query(_message.Message):
    __slots__ = ("image", "text", "vector", "id")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    text: str
    vector: Tensor
    id: str
    def __init__(self, image: _Optional[bytes] = ..., text: _Optional[str] = ..., vector: _Optional[_Union[Tensor, _Mapping]] = ..., id: _Optional[str] = ...) -> None: ...

class SearchParams(_message.Message):
    __slots__ = ("nprobe", "ef_search")
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    EF_SEARCH_FIELD_NUMBER: _ClassVar[int]
    nprobe: int
    ef_search: int
    def __init__(self, nprobe: _Optional[int] = ..., ef_search: _Optional[int] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("collection", "queries", "k", "label_filter", "params", "include_metadata", "predicted_label_filter", "min_confidence", "packed", "vectors")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    LABEL_FILTER_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_METADATA_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_LABEL_FILTER_FIELD_NUMBER: _ClassVar[int]
    MIN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    queries: _containers.RepeatedCompositeFieldContainer[Query]
    k: int
    label_filter: _containers.RepeatedScalarFieldContainer[str]
    params: SearchParams
    include_metadata: bool
    predicted_label_filter: _containers.RepeatedScalarFieldContainer[str]
    min_confidence: float
    packed: bool
    vectors: Tensor
    def __init__(self, collection: _Optional[str] = ..., queries: _Optional[_Iterable[_Union[Query, _Mapping]]] = ..., k: _Optional[int] = ..., label_filter: _Optional[_Iterable[str]] = ..., params: _Optional[_Union[SearchParams, _Mapping]] = ..., include_metadata: _Optional[bool] = ..., predicted_label_filter: _Optional[_Iterable[str]] = ..., min_confidence: _Optional[float] = ..., packed: _Optional[bool] = ..., vectors: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("id", "score", "label", "metadata", "predicted_label", "confidence")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    label: str
    metadata: _containers.ScalarMap[str, str]
    predicted_label: str
    confidence: float
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ..., label: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., predicted_label: _Optional[str] = ..., confidence: _Optional[float] = ...) -> None: ...

class QueryResult(_message.Message):
    __slots__ = ("hits",)
    HITS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("results", "truncated", "packed")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[QueryResult]
    truncated: _containers.RepeatedScalarFieldContainer[int]
    packed: PackedHits
    def __init__(self, results: _Optional[_Iterable[_Union[QueryResult, _Mapping]]] = ..., truncated: _Optional[_Iterable[int]] = ..., packed: _Optional[_Union[PackedHits, _Mapping]] = ...) -> None: ...

class PackedHits(_message.Message):
    __slots__ = ("counts", "ids", "scores")
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    counts: _containers.RepeatedScalarFieldContainer[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    scores: bytes
    def __init__(self, counts: _Optional[_Iterable[int]] = ..., ids: _Optional[_Iterable[str]] = ..., scores: _Optional[bytes] = ...) -> None: ...

class LabelledExample(_message.Message):
    __slots__ = ("example", "label")
    EXAMPLE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    example: Query
    label: str
    def __init__(self, example: _Optional[_Union[Query, _Mapping]] = ..., label: _Optional[str] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("collection", "support", "model", "metric", "queries", "k", "temperature", "include_neighbors", "vectors")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SUPPORT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_NEIGHBORS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    support: _containers.RepeatedCompositeFieldContainer[LabelledExample]
    model: str
    metric: str
    queries: _containers.RepeatedCompositeFieldContainer[Query]
    k: int
    temperature: float
    include_neighbors: bool
    vectors: Tensor
    def __init__(self, collection: _Optional[str] = ..., support: _Optional[_Iterable[_Union[LabelledExample, _Mapping]]] = ..., model: _Optional[str] = ..., metric: _Optional[str] = ..., queries: _Optional[_Iterable[_Union[Query, _Mapping]]] = ..., k: _Optional[int] = ..., temperature: _Optional[float] = ..., include_neighbors: _Optional[bool] = ..., vectors: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class ClassProbability(_message.Message):
    __slots__ = ("label", "probability")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    label: str
    probability: float
    def __init__(self, label: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class Classification(_message.Message):
    __slots__ = ("has_prediction", "label", "confidence", "probabilities", "neighbors")
    HAS_PREDICTION_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_FIELD_NUMBER: _ClassVar[int]
    has_prediction: bool
    label: str
    confidence: float
    probabilities: _containers.RepeatedCompositeFieldContainer[ClassProbability]
    neighbors: _containers.RepeatedCompositeFieldContainer[Hit]
    def __init__(self, has_prediction: _Optional[bool] = ..., label: _Optional[str] = ..., confidence: _Optional[float] = ..., probabilities: _Optional[_Iterable[_Union[ClassProbability, _Mapping]]] = ..., neighbors: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("results", "truncated", "truncated_support")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_SUPPORT_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Classification]
    truncated: _containers.RepeatedScalarFieldContainer[int]
    truncated_support: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, results: _Optional[_Iterable[_Union[Classification, _Mapping]]] = ..., truncated: _Optional[_Iterable[int]] = ..., truncated_support: _Optional[_Iterable[int]] = ...) -> None: ...

class SuggestLabelsRequest(_message.Message):
    __slots__ = ("collection", "count", "strategy", "seed", "k")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    collection: str
    count: int
    strategy: str
    seed: int
    k: int
    def __init__(self, collection: _Optional[str] = ..., count: _Optional[int] = ..., strategy: _Optional[str] = ..., seed: _Optional[int] = ..., k: _Optional[int] = ...) -> None: ...

class LabelSuggestion(_message.Message):
    __slots__ = ("id", "score", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    reason: str
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class SuggestLabelsResponse(_message.Message):
    __slots__ = ("suggestions", "strategy")
    SUGGESTIONS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    suggestions: _containers.RepeatedCompositeFieldContainer[LabelSuggestion]
    strategy: str
    def __init__(self, suggestions: _Optional[_Iterable[_Union[LabelSuggestion, _Mapping]]] = ..., strategy: _Optional[str] = ...) -> None: ...

class LabelAssignment(_message.Message):
    __slots__ = ("id", "label")
    ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    id: str
    label: str
    def __init__(self, id: _Optional[str] = ..., label: _Optional[str] = ...) -> None: ...

class SetLabelsRequest(_message.Message):
    __slots__ = ("collection", "assignments")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    assignments: _containers.RepeatedCompositeFieldContainer[LabelAssignment]
    def __init__(self, collection: _Optional[str] = ..., assignments: _Optional[_Iterable[_Union[LabelAssignment, _Mapping]]] = ...) -> None: ...

class SetLabelsResponse(_message.Message):
    __slots__ = ("labelled", "cleared", "unchanged")
    LABELLED_FIELD_NUMBER: _ClassVar[int]
    CLEARED_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    labelled: int
    cleared: int
    unchanged: int
    def __init__(self, labelled: _Optional[int] = ..., cleared: _Optional[int] = ..., unchanged: _Optional[int] = ...) -> None: ...

class PropagateLabelsRequest(_message.Message):
    __slots__ = ("collection", "method", "k", "temperature", "write_back", "alpha", "max_iterations", "report_progress")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    WRITE_BACK_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    MAX_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    REPORT_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    method: str
    k: int
    temperature: float
    write_back: bool
    alpha: float
    max_iterations: int
    report_progress: bool
    def __init__(self, collection: _Optional[str] = ..., method: _Optional[str] = ..., k: _Optional[int] = ..., temperature: _Optional[float] = ..., write_back: _Optional[bool] = ..., alpha: _Optional[float] = ..., max_iterations: _Optional[int] = ..., report_progress: _Optional[bool] = ...) -> None: ...

class JobProgress(_message.Message):
    __slots__ = ("stage", "done", "total")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    stage: str
    done: int
    total: int
    def __init__(self, stage: _Optional[str] = ..., done: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class PropagateLabelsResponse(_message.Message):
    __slots__ = ("id", "label", "confidence", "margin", "progress")
    ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    id: str
    label: str
    confidence: float
    margin: float
    progress: JobProgress
    def __init__(self, id: _Optional[str] = ..., label: _Optional[str] = ..., confidence: _Optional[float] = ..., margin: _Optional[float] = ..., progress: _Optional[_Union[JobProgress, _Mapping]] = ...) -> None: ...

class AuditLabelsRequest(_message.Message):
    __slots__ = ("collection", "count", "k", "temperature")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    count: int
    k: int
    temperature: float
    def __init__(self, collection: _Optional[str] = ..., count: _Optional[int] = ..., k: _Optional[int] = ..., temperature: _Optional[float] = ...) -> None: ...

class LabelFinding(_message.Message):
    __slots__ = ("id", "label", "suggested_label", "score")
    ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SUGGESTED_LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    id: str
    label: str
    suggested_label: str
    score: float
    def __init__(self, id: _Optional[str] = ..., label: _Optional[str] = ..., suggested_label: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class AuditLabelsResponse(_message.Message):
    __slots__ = ("findings",)
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    findings: _containers.RepeatedCompositeFieldContainer[LabelFinding]
    def __init__(self, findings: _Optional[_Iterable[_Union[LabelFinding, _Mapping]]] = ...) -> None: ...
