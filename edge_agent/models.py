"""The edge's model kinds over onnxruntime: the sentence-embedding reference contract, the image
classifier and raw ONNX graphs.

Contract: ``infer_blocking`` is the whole computation for a validated request (callable from any
thread, used directly by the in-process agent); ``infer`` runs it on the model's own thread pool,
off the event loop, and refuses requests whose deadline has already passed. ``load`` creates the
session and warms it up; nothing is served before that.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from edgecloud.codec import bytes_array
from edgecloud.datatypes import datatype_of
from edgecloud.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument
from edgecloud.model import BlockingRunner, Model
from edgecloud.image_model import IMAGE_INPUT, PROBABILITIES, prepared_images
from edgecloud.reference_model import EMBEDDING_DIM, INPUT_NAME, OUTPUT_NAME
from edgecloud.tokenization import TextTokenizer, decode_utf8, mean_pool_normalize
from edgecloud.types import InferRequest, InferResponse, ModelMetadata, Tensor, TensorSpec
from edge_agent.lone import LoneRequests
from edge_agent.model_dir import ModelDirError, ModelDirSpec
from edge_agent.onnx_session import SessionSettings, create_session, graph_specs

PLATFORM = "onnxruntime_onnx"


class OnnxModel(Model):
    """Shared lifecycle of the edge's ONNX models."""

    def __init__(self, spec: ModelDirSpec, variant: str | None, settings: SessionSettings, concurrency: int,
                 lone: LoneRequests | None = None):
        self.spec = spec
        self.variant = variant or spec.default_variant
        self.settings = settings
        self._file = spec.onnx_file(self.variant)
        self._session = None
        self._runner: BlockingRunner | None = BlockingRunner(concurrency, name=f"onnx-{spec.name}")
        self.lone = lone or LoneRequests(1, False, spec.name)
        """The session a request arriving alone runs on (``edge_agent.lone``); off by default."""

    def ready(self) -> bool:
        return self._session is not None

    def load_blocking(self) -> None:
        self._session = create_session(self._file, self.settings)
        self._on_session()
        self.warm_up()
        self.lone.attach(self._file, self.settings, self._session, self._probe)

    _probe: Callable[[object], object] | None = None
    """One representative call on a given session, timed at load to decide on a lone session
    (``edge_agent.lone``); model kinds that define none get no automatic lone session."""

    def _on_session(self) -> None:
        """Hook for subclasses to read the graph once the session exists."""

    def warm_up(self) -> None:
        """Run the model once or twice so the first real request pays no set-up cost."""

    async def load(self) -> None:
        if self._runner is None:
            raise FailedPrecondition(f"model {self.spec.name!r} was unloaded")
        await self._runner.run(self.load_blocking)

    def unload_blocking(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None
        self.lone.detach()
        self._session = None

    async def unload(self) -> None:
        self.unload_blocking()

    def _check_loaded(self):
        """The session this call runs on: the lone one inside a ``lone.call()`` that got it."""
        if self._session is None:
            raise FailedPrecondition(f"model {self.spec.name!r} is not loaded")
        return self.lone.session() or self._session

    def run_call(self, request: InferRequest) -> InferResponse:
        """``infer_blocking`` counted as one call of the model (it may get the lone session)."""
        if not self.lone.attached:  # off: no call to count (a context manager per request saved)
            return self.infer_blocking(request)
        with self.lone.call():
            return self.infer_blocking(request)

    def infer_blocking(self, request: InferRequest) -> InferResponse:
        raise NotImplementedError

    async def infer(self, request: InferRequest) -> InferResponse:
        if self._runner is None:
            raise FailedPrecondition(f"model {self.spec.name!r} is not loaded")
        return await self._runner.run(self._infer_before_deadline, request)

    def _infer_before_deadline(self, request: InferRequest) -> InferResponse:
        if request.deadline is not None and time.monotonic() >= request.deadline:
            raise DeadlineExceeded("the request's deadline passed before it reached the model")
        return self.run_call(request)


class SentenceEmbeddingModel(OnnxModel):
    """``text`` (BYTES [N]) -> ``embedding`` (FP32 [N, D]), mean-pooled and L2-normalised.

    Up to ``chunk_size`` texts run as one call; more are sorted by length and run in chunks of
    ``chunk_size``, so each chunk pads only to its own longest text. Results return in request
    order either way.
    """

    def __init__(self, spec: ModelDirSpec, variant: str | None = None, settings: SessionSettings = SessionSettings(),
                 concurrency: int = 1, chunk_size: int = 32, *, lone: LoneRequests | None = None):
        super().__init__(spec, variant, settings, concurrency, lone)
        if spec.tokenizer is None:
            raise ValueError(f"{spec.path.name}: a sentence-embedding model needs a tokenizer")
        self.chunk_size = chunk_size
        self.tokenizer = TextTokenizer.from_file(spec.tokenizer, spec.max_sequence_length)
        dim = spec.outputs[0].shape[-1] if spec.outputs else EMBEDDING_DIM
        self.metadata = ModelMetadata(
            name=spec.name,
            versions=(spec.version,),
            platform=PLATFORM,
            inputs=(TensorSpec(INPUT_NAME, "BYTES", (-1,)),),
            outputs=(TensorSpec(OUTPUT_NAME, "FP32", (-1, dim)),),
        )
        self._graph_inputs: tuple[str, ...] = ()
        self._graph_output = ""

    def _on_session(self) -> None:
        self._graph_inputs = tuple(node.name for node in self._session.get_inputs())
        self._graph_output = self._session.get_outputs()[0].name

    def warm_up(self) -> None:
        for texts in (["warm up"], ["warm up the edge model with a longer sentence"] * 4):
            self.embed_texts(texts)

    def _probe(self, session) -> None:
        self._embed_chunk(session, ["a sentence of about the length most requests carry"])

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        session = self._check_loaded()
        if len(texts) <= self.chunk_size:  # one chunk (a lone sentence, nearly always): nothing to sort
            return self._embed_chunk(session, texts)
        dim = self.metadata.outputs[0].shape[-1]
        out = np.empty((len(texts), dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.chunk_size):
            index = order[start : start + self.chunk_size]
            out[index] = self._embed_chunk(session, [texts[i] for i in index])
        return out

    def _embed_chunk(self, session, texts: Sequence[str]) -> np.ndarray:
        encoded = self.tokenizer.encode(texts)
        (hidden,) = session.run([self._graph_output], {name: encoded[name] for name in self._graph_inputs})
        return mean_pool_normalize(hidden, encoded["attention_mask"])

    def infer_blocking(self, request: InferRequest) -> InferResponse:
        tensor = request.input(INPUT_NAME)
        texts = decode_utf8(tensor.data.reshape(-1), f"inputs[{INPUT_NAME}]")
        embeddings = self.embed_texts(texts)
        return InferResponse(
            model_name=self.metadata.name,
            model_version=self.version,
            outputs=[Tensor(OUTPUT_NAME, "FP32", embeddings.shape, embeddings)],
            parameters={"variant": self.variant},
        )


class RawOnnxModel(OnnxModel):
    """Any ONNX graph: inputs and outputs as the graph declares them, tensors passed through."""

    def __init__(self, spec: ModelDirSpec, variant: str | None = None, settings: SessionSettings = SessionSettings(),
                 concurrency: int = 1, *, lone: LoneRequests | None = None):
        super().__init__(spec, variant, settings, concurrency, lone)
        # Metadata needs the graph; read it from a probe session now so validation works at once.
        probe = create_session(self._file, SessionSettings(intra_op_threads=1))
        inputs, outputs = graph_specs(probe)
        del probe
        self.metadata = ModelMetadata(spec.name, (spec.version,), PLATFORM, spec.inputs or inputs,
                                      spec.outputs or outputs)

    def warm_up(self) -> None:
        feeds = {}
        for spec in self.metadata.inputs:
            shape = tuple(1 if d == -1 else d for d in spec.shape)
            if spec.datatype == "BYTES":
                feeds[spec.name] = np.full(shape, "", dtype=object)
            elif spec.datatype == "BF16":
                return  # numpy cannot feed bfloat16; nothing to warm up with
            else:
                from edgecloud.datatypes import DATATYPES

                feeds[spec.name] = np.zeros(shape, dtype=DATATYPES[spec.datatype].numpy_dtype)
        try:
            self._session.run(None, feeds)
        except Exception:  # a graph whose dims are not all free may reject the probe shape
            pass

    def infer_blocking(self, request: InferRequest) -> InferResponse:
        session = self._check_loaded()
        feeds = {}
        for tensor in request.inputs:
            if tensor.datatype == "BYTES":
                items = decode_utf8(tensor.data.reshape(-1), f"inputs[{tensor.name}]")
                feeds[tensor.name] = np.array(items, dtype=object).reshape(tensor.shape)
            elif tensor.datatype == "BF16":
                raise InvalidArgument("BF16 inputs are not supported by the edge runtime",
                                      field=f"inputs[{tensor.name}].datatype")
            else:
                feeds[tensor.name] = tensor.data
        names = [spec.name for spec in self.metadata.outputs]
        results = session.run(names, feeds)
        outputs = []
        for name, value in zip(names, results):
            value = np.asarray(value)
            if value.dtype.kind in ("U", "O", "S"):
                value = bytes_array(value.reshape(-1).tolist()).reshape(value.shape)
            outputs.append(Tensor(name, datatype_of(value), value.shape, value))
        return InferResponse(self.metadata.name, outputs, model_version=self.version,
                             parameters={"variant": self.variant})


class ImageClassifierModel(OnnxModel):
    """``image`` (encoded BYTES [N] or UINT8 [N, 224, 224, 3]) -> ``probabilities`` (FP32 [N, 1000]).

    Uploads are decoded on the model's own threads (``edgecloud.images``: a bad image is refused by
    field before the session runs); the graph does the normalisation and the softmax. ``labels``
    (the directory's ``labels`` file) name the classes for the classification extension."""

    def __init__(self, spec: ModelDirSpec, variant: str | None = None, settings: SessionSettings = SessionSettings(),
                 concurrency: int = 1, *, lone: LoneRequests | None = None):
        super().__init__(spec, variant, settings, concurrency, lone)
        self.labels = _read_labels(spec)
        self.metadata = ModelMetadata(spec.name, (spec.version,), PLATFORM, (IMAGE_INPUT,),
                                      (TensorSpec(PROBABILITIES.name, "FP32", (-1, len(self.labels))),))

    def warm_up(self) -> None:
        for rows in (1, 8):
            self.classify(np.zeros((rows, 224, 224, 3), dtype=np.uint8))

    def _probe(self, session) -> None:
        session.run([PROBABILITIES.name], {IMAGE_INPUT.name: np.zeros((1, 224, 224, 3), dtype=np.uint8)})

    def classify(self, images: np.ndarray) -> np.ndarray:
        """Probabilities [N, classes] for prepared UINT8 [N, 224, 224, 3] images (blocking)."""
        session = self._check_loaded()
        return session.run([PROBABILITIES.name], {IMAGE_INPUT.name: images})[0]

    def infer_blocking(self, request: InferRequest) -> InferResponse:
        images = prepared_images(request.input(IMAGE_INPUT.name))
        probabilities = self.classify(images)
        return InferResponse(self.metadata.name, [Tensor(PROBABILITIES.name, "FP32", probabilities.shape, probabilities)],
                             model_version=self.version, parameters={"variant": self.variant})


def _read_labels(spec: ModelDirSpec) -> tuple[str, ...]:
    import json

    name = spec.extra.get("labels", "labels.json")
    path = spec.path / str(name)
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelDirError(f"{spec.path.name}: labels file {path.name} is unreadable ({exc})") from None
    if not isinstance(labels, list) or not labels or not all(isinstance(label, str) for label in labels):
        raise ModelDirError(f"{spec.path.name}: {path.name} must be a JSON list of class names")
    return tuple(labels)


def model_from_dir(spec: ModelDirSpec, variant: str | None = None, settings: SessionSettings = SessionSettings(),
                   concurrency: int = 1, chunk_size: int = 32, max_tokens: int = 512,
                   lone: LoneRequests | None = None) -> Model:
    """The model kind the directory's task calls for (not loaded yet); ``lone``: how its ONNX
    session serves a request that arrives alone (``edge_agent.lone``; not for generation)."""
    if spec.task == "text-generation":
        from edge_agent.generation import GenAIModel, GenAISettings

        chosen = variant or spec.default_variant
        return GenAIModel(spec.onnx_file(chosen), name=spec.name, version=spec.version, variant=chosen,
                          settings=GenAISettings(concurrency=concurrency, max_tokens=max_tokens,
                                                 intra_op_threads=settings.intra_op_threads))
    if spec.task == "sentence-embedding":
        return SentenceEmbeddingModel(spec, variant, settings, concurrency, chunk_size, lone=lone)
    if spec.task == "image-classification":
        return ImageClassifierModel(spec, variant, settings, concurrency, lone=lone)
    return RawOnnxModel(spec, variant, settings, concurrency, lone=lone)
