"""Laying tuned parameters over a model's weights (registry/embedder.py), and the shipped file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from agentmesh.errors import ModelError
from agentmesh.registry.embedder import TUNED_MINILM_PARAMS, load_tuned_params


def test_tuned_parameters_replace_the_named_ones_only(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    weight = model.weight.detach().clone()
    path = tmp_path / "t.npz"
    np.savez(path, bias=np.array([1.5, -2.0], dtype=np.float16))
    load_tuned_params(model, path)
    assert model.bias.tolist() == [1.5, -2.0]
    assert torch.equal(model.weight, weight)


@pytest.mark.parametrize("stored", [{"nope": np.zeros(2)}, {"bias": np.zeros(3)}])
def test_parameters_that_do_not_fit_are_a_model_error(tmp_path: Path, stored: dict[str, np.ndarray]) -> None:
    path = tmp_path / "t.npz"
    np.savez(path, **stored)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="does not fit"):
        load_tuned_params(torch.nn.Linear(3, 2), path)
    with pytest.raises(ModelError, match="cannot read"):
        load_tuned_params(torch.nn.Linear(3, 2), tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelError, match="cannot read"):
        load_tuned_params(torch.nn.Linear(3, 2), tmp_path / "bad.npz")


def test_the_shipped_tuning_is_biases_and_layer_norms_only() -> None:
    with np.load(TUNED_MINILM_PARAMS) as stored:
        names = stored.files
        assert sum(stored[n].size for n in names) < 100_000  # a small file, not a second model
    assert names and all("bias" in n or "LayerNorm" in n for n in names)
