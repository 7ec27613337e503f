"""A model repository: several bundles, each selected by name and version (like Triton's).

Layout of a repository folder:

    <repo>/<model name>/<version>/manifest.json (+ ONNX files)

A path given to ModelRepository may be such a folder or a single bundle directory. The name and
version a bundle is served under are the ones in its manifest, so a folder can be named anything.
"""

from __future__ import annotations

from pathlib import Path

from .bundle import MANIFEST, Bundle, BundleError, load_bundle

DEFAULT_REPOSITORY = Path(__file__).resolve().parent / "repository"
DEFAULT_MODEL = "agilenn-fashion-mnist"


class ModelNotFound(LookupError):
    """No served bundle matches the requested name/version."""


def _version_key(version: str):
    # Numeric versions sort numerically ("10" after "9"); others after them, by text.
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def find_bundle_dirs(path: Path) -> list[Path]:
    path = Path(path)
    if (path / MANIFEST).is_file():
        return [path]
    if not path.is_dir():
        raise BundleError(f"model path {path} does not exist")
    found = sorted(p.parent for p in path.glob(f"*/*/{MANIFEST}"))
    found += sorted(p.parent for p in path.glob(f"*/{MANIFEST}"))
    if not found:
        raise BundleError(f"{path} holds no bundle (expected {MANIFEST} in it, or <model>/<version>/{MANIFEST})")
    return found


def shipped_versions(family: str, repository: Path = DEFAULT_REPOSITORY) -> list[tuple[str, str]]:
    """(model folder, version folder) of every bundle in ``repository`` whose model folder's name
    contains ``family`` ("fashion-mnist"): what tests iterate over, so a new version cannot skip them."""
    return [(d.parent.name, d.name) for d in find_bundle_dirs(repository) if family in d.parent.name]


class ModelRepository:
    def __init__(self, paths=None, default_model: str | None = None, check_onnx: bool = True):
        paths = [DEFAULT_REPOSITORY] if not paths else [Path(p) for p in paths]
        self.bundles: dict[tuple[str, str], Bundle] = {}
        first_name = None
        for path in paths:
            for bundle_dir in find_bundle_dirs(path):
                bundle = load_bundle(bundle_dir, check_onnx=check_onnx)
                key = (bundle.name, bundle.version)
                if key in self.bundles:
                    raise BundleError(
                        f"model {bundle.name} version {bundle.version} is served twice: "
                        f"{self.bundles[key].path} and {bundle.path}"
                    )
                self.bundles[key] = bundle
                first_name = first_name or bundle.name
        if default_model is None:
            names = {name for name, _ in self.bundles}
            default_model = DEFAULT_MODEL if DEFAULT_MODEL in names else first_name
        self.default_model = default_model
        if default_model not in {name for name, _ in self.bundles}:
            raise BundleError(f"default model {default_model!r} is not in the repository")

    def models(self) -> list[tuple[str, str]]:
        return sorted(self.bundles, key=lambda k: (k[0], _version_key(k[1])))

    def resolve(self, name: str = "", version: str = "") -> Bundle:
        """Empty name: the default model. Empty version: that model's highest version."""
        name = name or self.default_model
        if version:
            bundle = self.bundles.get((name, version))
            if bundle is None:
                raise ModelNotFound(f"model {name!r} version {version!r} is not served (served: {self._served()})")
            return bundle
        versions = [v for n, v in self.bundles if n == name]
        if not versions:
            raise ModelNotFound(f"model {name!r} is not served (served: {self._served()})")
        return self.bundles[(name, max(versions, key=_version_key))]

    def _served(self) -> str:
        return ", ".join(f"{n}:{v}" for n, v in self.models())
