"""Laying tuned parameters over a model's weights (registry/embedder.py), and the shipped file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from agentmesh.errors import ModelError
from agentmesh.registry.embedder import LORA_A, LORA_B, TUNED_MINILM_PARAMS, load_tuned_params


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


def test_low_rank_factors_add_their_product_to_the_weight(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    weight = model.weight.detach().clone()
    a = np.array([[1.0, 0.0, -1.0]], dtype=np.float16)  # rank 1: (rank, in)
    b = np.array([[0.5], [2.0]], dtype=np.float16)  # (out, rank)
    path = tmp_path / "t.npz"
    np.savez(path, **{"bias": np.zeros(2), "weight" + LORA_A: a, "weight" + LORA_B: b})
    load_tuned_params(model, path)
    expected = weight + torch.from_numpy((b @ a).astype(np.float32))
    torch.testing.assert_close(model.weight.detach(), expected)
    assert model.bias.tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    "stored",
    [
        {"weight" + LORA_A: np.zeros((1, 3))},  # no B
        {"weight" + LORA_B: np.zeros((2, 1))},  # no A
        {"weight" + LORA_A: np.zeros((1, 2)), "weight" + LORA_B: np.zeros((2, 1))},  # A too narrow
        {"weight" + LORA_A: np.zeros((2, 3)), "weight" + LORA_B: np.zeros((2, 1))},  # ranks differ
        {"nope" + LORA_A: np.zeros((1, 3)), "nope" + LORA_B: np.zeros((2, 1))},
    ],
)
def test_low_rank_factors_that_do_not_fit_are_a_model_error(
    tmp_path: Path, stored: dict[str, np.ndarray]
) -> None:
    path = tmp_path / "t.npz"
    np.savez(path, **stored)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="does not fit"):
        load_tuned_params(torch.nn.Linear(3, 2), path)


def test_the_shipped_tuning_is_biases_layer_norms_and_low_rank_factors() -> None:
    with np.load(TUNED_MINILM_PARAMS) as stored:
        names = stored.files
        sizes = {n: stored[n].size for n in names}
        ranks = {stored[n].shape[0] for n in names if n.endswith(LORA_A)}
    assert names and all("bias" in n or "LayerNorm" in n or n.endswith((LORA_A, LORA_B)) for n in names)
    assert sum(sizes.values()) < 2_000_000  # a few MB, not a second model (22.7M numbers)
    assert TUNED_MINILM_PARAMS.stat().st_size < 4_000_000
    assert all(r <= 64 for r in ranks)


def test_a_soup_averages_runs_and_keeps_the_best_low_rank_part_of_their_mean() -> None:
    from agentmesh.routing.tuning import soup

    rng = np.random.default_rng(0)
    runs = [
        {
            "bias": rng.normal(size=4).astype(np.float32),
            "w" + LORA_A: rng.normal(size=(2, 5)).astype(np.float16),
            "w" + LORA_B: rng.normal(size=(4, 2)).astype(np.float16),
        }
        for _ in range(3)
    ]
    mean = np.mean([r["w" + LORA_B].astype(np.float32) @ r["w" + LORA_A].astype(np.float32) for r in runs], 0)
    full = soup(runs, rank=6)  # rank 6 holds the mean of three rank-2 products exactly
    np.testing.assert_allclose(full["bias"], np.mean([r["bias"] for r in runs], 0), rtol=1e-6)
    assert full["w" + LORA_A].shape == (4, 5) and full["w" + LORA_A].dtype == np.float16
    product = full["w" + LORA_B].astype(np.float32) @ full["w" + LORA_A].astype(np.float32)
    np.testing.assert_allclose(product, mean, atol=0.02)
    cut = soup(runs, rank=1)
    assert cut["w" + LORA_A].shape == (1, 5) and cut["w" + LORA_B].shape == (4, 1)
    u, s, vt = np.linalg.svd(mean)
    best = s[0] * np.outer(u[:, 0], vt[0])  # Eckart-Young: no rank-1 matrix is nearer the mean
    np.testing.assert_allclose(
        cut["w" + LORA_B].astype(np.float32) @ cut["w" + LORA_A].astype(np.float32), best, atol=0.02
    )
    with pytest.raises(ValueError):
        soup([], rank=1)
