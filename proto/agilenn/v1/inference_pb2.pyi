from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LogitsEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOGITS_FLOAT32: _ClassVar[LogitsEncoding]
    LOGITS_FLOAT16: _ClassVar[LogitsEncoding]
    LOGITS_INT8: _ClassVar[LogitsEncoding]
    LOGITS_INT16: _ClassVar[LogitsEncoding]

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CODE_UNSPECIFIED: _ClassVar[ErrorCode]
    INVALID_PAYLOAD: _ClassVar[ErrorCode]
    MODEL_NOT_FOUND: _ClassVar[ErrorCode]
    DEADLINE_EXCEEDED: _ClassVar[ErrorCode]
    RESOURCE_EXHAUSTED: _ClassVar[ErrorCode]
    UNAVAILABLE: _ClassVar[ErrorCode]
    INTERNAL: _ClassVar[ErrorCode]
    UNSUPPORTED: _ClassVar[ErrorCode]
LOGITS_FLOAT32: LogitsEncoding
LOGITS_FLOAT16: LogitsEncoding
LOGITS_INT8: LogitsEncoding
LOGITS_INT16: LogitsEncoding
ERROR_CODE_UNSPECIFIED: ErrorCode
INVALID_PAYLOAD: ErrorCode
MODEL_NOT_FOUND: ErrorCode
DEADLINE_EXCEEDED: ErrorCode
RESOURCE_EXHAUSTED: ErrorCode
UNAVAILABLE: ErrorCode
INTERNAL: ErrorCode
UNSUPPORTED: ErrorCode

class ModelRef(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class EncodedImage(_message.Message):
    __slots__ = ("format", "data")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    format: str
    data: bytes
    def __init__(self, format: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("request_id", "model", "feature_payload", "image", "timeout_ms", "stream_options")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FEATURE_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    STREAM_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    model: ModelRef
    feature_payload: bytes
    image: EncodedImage
    timeout_ms: int
    stream_options: StreamOptions
    def __init__(self, request_id: _Optional[int] = ..., model: _Optional[_Union[ModelRef, _Mapping]] = ..., feature_payload: _Optional[bytes] = ..., image: _Optional[_Union[EncodedImage, _Mapping]] = ..., timeout_ms: _Optional[int] = ..., stream_options: _Optional[_Union[StreamOptions, _Mapping]] = ...) -> None: ...

class StreamOptions(_message.Message):
    __slots__ = ("timings", "model", "channels_received", "logits_encoding")
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    LOGITS_ENCODING_FIELD_NUMBER: _ClassVar[int]
    timings: bool
    model: bool
    channels_received: bool
    logits_encoding: LogitsEncoding
    def __init__(self, timings: _Optional[bool] = ..., model: _Optional[bool] = ..., channels_received: _Optional[bool] = ..., logits_encoding: _Optional[_Union[LogitsEncoding, str]] = ...) -> None: ...

class ServerTimings(_message.Message):
    __slots__ = ("queue_us", "decode_us", "compute_us", "total_us", "batch_size")
    QUEUE_US_FIELD_NUMBER: _ClassVar[int]
    DECODE_US_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_US_FIELD_NUMBER: _ClassVar[int]
    TOTAL_US_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    queue_us: int
    decode_us: int
    compute_us: int
    total_us: int
    batch_size: int
    def __init__(self, queue_us: _Optional[int] = ..., decode_us: _Optional[int] = ..., compute_us: _Optional[int] = ..., total_us: _Optional[int] = ..., batch_size: _Optional[int] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: ErrorCode
    message: str
    def __init__(self, code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ("request_id", "model", "logits", "error", "timings", "channels_received")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LOGITS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    model: ModelRef
    logits: Logits
    error: Error
    timings: ServerTimings
    channels_received: int
    def __init__(self, request_id: _Optional[int] = ..., model: _Optional[_Union[ModelRef, _Mapping]] = ..., logits: _Optional[_Union[Logits, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., timings: _Optional[_Union[ServerTimings, _Mapping]] = ..., channels_received: _Optional[int] = ...) -> None: ...

class Logits(_message.Message):
    __slots__ = ("values", "float16", "int8", "scale", "int16")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    FLOAT16_FIELD_NUMBER: _ClassVar[int]
    INT8_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    INT16_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    float16: bytes
    int8: bytes
    scale: float
    int16: bytes
    def __init__(self, values: _Optional[_Iterable[float]] = ..., float16: _Optional[bytes] = ..., int8: _Optional[bytes] = ..., scale: _Optional[float] = ..., int16: _Optional[bytes] = ...) -> None: ...

class GetManifestRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ...) -> None: ...

class GetManifestResponse(_message.Message):
    __slots__ = ("model", "manifest_json")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    manifest_json: str
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., manifest_json: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "default_model")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelRef]
    default_model: ModelRef
    def __init__(self, models: _Optional[_Iterable[_Union[ModelRef, _Mapping]]] = ..., default_model: _Optional[_Union[ModelRef, _Mapping]] = ...) -> None: ...
