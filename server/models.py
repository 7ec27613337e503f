"""The served models: each bundle of the repository with its ONNX sessions and batchers."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from agilenn.codec import FeatureCodec
from agilenn.models.bundle import REFERENCE_INPUT, REFERENCE_LOGITS, REMOTE_INPUT, REMOTE_LOGITS, Bundle
from agilenn.models.model_repository import ModelNotFound, ModelRepository
from agilenn.v1 import inference_pb2 as pb

from .batcher import Batcher
from .metrics import Metrics, ModelMetrics

log = logging.getLogger(__name__)

_IO = {"remote": (REMOTE_INPUT, REMOTE_LOGITS), "reference": (REFERENCE_INPUT, REFERENCE_LOGITS)}


@dataclass(frozen=True)
class BatchingOptions:
    max_batch_size: int = 32
    max_queue_delay_s: float = 0.0
    max_queue_size: int = 1024
    onnx_threads: int = 1


def make_session(path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    # A handful of threads at most: the event loop needs a core of its own on a small box, and
    # spinning worker threads would burn it while idle.
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _runner(session: ort.InferenceSession, input_name: str, output_name: str):
    def run(x: np.ndarray) -> np.ndarray:
        return session.run([output_name], {input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    return run


@dataclass
class ServedModel:
    bundle: Bundle
    codec: FeatureCodec
    ref: pb.ModelRef
    metrics: ModelMetrics
    batchers: dict[str, Batcher] = field(default_factory=dict)  # role -> batcher

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def version(self) -> str:
        return self.bundle.version


class ServedModels:
    """Resolves a request's ModelRef and owns every model's batchers (started/closed together)."""

    def __init__(self, repository: ModelRepository, options: BatchingOptions, executor, metrics: Metrics):
        self.repository = repository
        self._models: dict[tuple[str, str], ServedModel] = {}
        self._resolved: dict[tuple[str, str], ServedModel] = {}
        for key, bundle in repository.bundles.items():
            mm = metrics.for_model(*key)
            model = ServedModel(bundle, bundle.codec(), pb.ModelRef(name=key[0], version=key[1]), mm)
            for role, (inp, out) in _IO.items():
                if not bundle.has(role):
                    continue
                session = make_session(bundle.onnx_path(role), options.onnx_threads)
                model.batchers[role] = Batcher(
                    _runner(session, inp, out), executor,
                    max_batch_size=options.max_batch_size, max_queue_delay_s=options.max_queue_delay_s,
                    max_queue_size=options.max_queue_size, on_batch=mm.batch, name=f"{key[0]}:{key[1]}:{role}",
                )
                self._warm_up(model, role, session, inp, out, options.max_batch_size)
            self._models[key] = model
            log.info("serving %s version %s from %s (%s)", key[0], key[1], bundle.path, ", ".join(model.batchers))

    @staticmethod
    def _warm_up(model: ServedModel, role, session, inp, out, max_batch):
        # The first runs allocate and plan; pay that at start-up rather than on a client's request.
        shape = model.bundle.remote_feature_shape if role == "remote" else model.bundle.input_shape
        for n in sorted({1, max_batch}):
            session.run([out], {inp: np.zeros((n, *shape), np.float32)})

    def __iter__(self):
        return iter(self._models.values())

    @property
    def default_model(self) -> str:
        return self.repository.default_model

    def resolve(self, name: str, version: str) -> ServedModel:
        key = (name, version)
        model = self._resolved.get(key)
        if model is None:
            bundle = self.repository.resolve(name, version)  # raises ModelNotFound
            model = self._models[(bundle.name, bundle.version)]
            self._resolved[key] = model  # only hits are cached: unknown names cannot grow it
        return model

    def start(self) -> None:
        for model in self._models.values():
            for b in model.batchers.values():
                b.start()

    async def close(self) -> None:
        for model in self._models.values():
            for b in model.batchers.values():
                await b.close()


__all__ = ["BatchingOptions", "ModelNotFound", "ServedModel", "ServedModels", "make_session"]
