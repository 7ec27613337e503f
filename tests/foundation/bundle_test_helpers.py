"""Helpers shared by tests/foundation (a uniquely named module, not conftest: see DEVELOPERS.md)."""
import json
import shutil


def clone(bundle_dir, tmp_path, edit=None):
    """A copy of a bundle under tmp_path/clone, its manifest passed through ``edit`` when given."""
    out = tmp_path / "clone"
    shutil.copytree(bundle_dir, out)
    if edit:
        manifest = json.loads((out / "manifest.json").read_text())
        edit(manifest)
        (out / "manifest.json").write_text(json.dumps(manifest))
    return out
