"""The fit estimate: weights plus the KV cache at max_model_len against gpu_memory_utilization x memory."""

from __future__ import annotations

from modelfiles.fit import fit_estimate

GIB = 1024**3
# Qwen3-30B-A3B's config.json numbers.
QWEN3_30B_A3B = {
    "num_hidden_layers": 48,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "head_dim": 128,
    "hidden_size": 2048,
    "max_position_embeddings": 40960,
    "torch_dtype": "bfloat16",
}


def test_kv_cache_of_a_known_config():
    estimate = fit_estimate(
        config=QWEN3_30B_A3B,
        weights_bytes=61 * GIB,
        max_model_len=32768,
        gpu_memory_utilization=0.7,
        memory_bytes=128 * GIB,
    )
    # 48 layers x 2 (K and V) x 4 KV heads x 128 x 2 bytes x 32768 tokens = 3 GiB
    assert estimate.kv_cache_bytes == 48 * 2 * 4 * 128 * 2 * 32768 == 3 * GIB
    assert estimate.needed_per_node == 64 * GIB
    assert estimate.budget_per_node == int(0.7 * 128 * GIB)
    assert estimate.fits
    assert "3.0 GiB" in estimate.detail() and "64.0 GiB per node" in estimate.detail()


def test_too_big_does_not_fit_and_two_nodes_split_it():
    big = fit_estimate(
        config=QWEN3_30B_A3B,
        weights_bytes=120 * GIB,
        max_model_len=None,
        gpu_memory_utilization=0.9,
        memory_bytes=128 * GIB,
    )
    assert big.tokens == 40960  # no max_model_len: the model's own maximum
    assert not big.fits and big.detail().startswith("does NOT fit")
    split = fit_estimate(
        config=QWEN3_30B_A3B,
        weights_bytes=120 * GIB,
        max_model_len=None,
        gpu_memory_utilization=0.9,
        memory_bytes=128 * GIB,
        nodes=2,
    )
    assert split.fits and split.needed_per_node == big.needed_per_node // 2


def test_fp8_kv_cache_and_defaults_from_the_attention_heads():
    config = {"num_hidden_layers": 2, "num_attention_heads": 8, "hidden_size": 512, "torch_dtype": "float16"}
    estimate = fit_estimate(
        config={"text_config": config},
        weights_bytes=0,
        max_model_len=100,
        gpu_memory_utilization=0.5,
        memory_bytes=GIB,
        kv_cache_dtype="fp8",
    )
    assert (estimate.kv_heads, estimate.head_dim, estimate.dtype_bytes) == (8, 64, 1)
    assert estimate.kv_cache_bytes == 2 * 2 * 8 * 64 * 1 * 100
