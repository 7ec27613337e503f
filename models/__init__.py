"""agilenn.models: the model bundle contract, model repositories, and the shipped default models."""

from .bundle import FORMAT, FORMAT_VERSION, Bundle, BundleError, load_bundle, validate_manifest, write_manifest
from .model_repository import DEFAULT_MODEL, DEFAULT_REPOSITORY, ModelNotFound, ModelRepository

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_REPOSITORY",
    "FORMAT",
    "FORMAT_VERSION",
    "Bundle",
    "BundleError",
    "ModelNotFound",
    "ModelRepository",
    "load_bundle",
    "validate_manifest",
    "write_manifest",
]
