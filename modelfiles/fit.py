"""Will a model fit the memory vLLM may take on its nodes? Weights plus the KV cache at max_model_len, against
gpu_memory_utilization x the node's memory (the Spark's unified memory: MemTotal)."""

from __future__ import annotations

from dataclasses import dataclass

DTYPE_BYTES = {
    "float32": 4,
    "fp32": 4,
    "float16": 2,
    "fp16": 2,
    "half": 2,
    "bfloat16": 2,
    "bf16": 2,
    "fp8": 1,
    "fp8_e4m3": 1,
    "fp8_e5m2": 1,
    "float8_e4m3fn": 1,
    "int8": 1,
}


def human_bytes(value: float | int | None) -> str:
    """1.5 GiB, 300 MiB, 12 KiB, 7 B."""
    if value is None:
        return "?"
    number = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(number) < 1024 or unit == "TiB":
            return f"{number:.0f} {unit}" if unit == "B" else f"{number:.1f} {unit}"
        number /= 1024
    return f"{number:.1f} TiB"


@dataclass(frozen=True)
class FitEstimate:
    """The numbers of one estimate, per node (a two-node model splits weights and KV cache over both)."""

    weights_bytes: int
    kv_cache_bytes: int
    tokens: int
    layers: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int
    nodes: int
    memory_bytes: int
    utilization: float

    @property
    def needed_per_node(self) -> int:
        return (self.weights_bytes + self.kv_cache_bytes) // max(self.nodes, 1)

    @property
    def budget_per_node(self) -> int:
        return int(self.utilization * self.memory_bytes)

    @property
    def fits(self) -> bool:
        return self.needed_per_node <= self.budget_per_node

    def detail(self) -> str:
        split = f" over {self.nodes} nodes" if self.nodes > 1 else ""
        verdict = "fits" if self.fits else "does NOT fit"
        return (
            f"{verdict}: weights {human_bytes(self.weights_bytes)} + KV cache {human_bytes(self.kv_cache_bytes)} "
            f"({self.layers} layers x 2 x {self.kv_heads} KV heads x {self.head_dim} x {self.dtype_bytes} B x "
            f"{self.tokens} tokens){split} = {human_bytes(self.needed_per_node)} per node, against "
            f"{self.utilization:g} x {human_bytes(self.memory_bytes)} = {human_bytes(self.budget_per_node)}"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "weights_bytes": self.weights_bytes,
            "kv_cache_bytes": self.kv_cache_bytes,
            "needed_per_node": self.needed_per_node,
            "budget_per_node": self.budget_per_node,
            "fits": self.fits,
            "detail": self.detail(),
        }


def _text_config(config: dict) -> dict:
    """Multimodal configs keep the language model's numbers under text_config (or llm_config)."""
    for key in ("text_config", "llm_config", "language_config"):
        inner = config.get(key)
        if isinstance(inner, dict) and inner.get("num_hidden_layers"):
            return {**config, **inner}
    return config


def fit_estimate(
    *,
    config: dict,
    weights_bytes: int,
    max_model_len: int | None,
    gpu_memory_utilization: float,
    memory_bytes: int,
    nodes: int = 1,
    kv_cache_dtype: str | None = None,
) -> FitEstimate:
    """KV cache = num_layers x 2 x num_kv_heads x head_dim x dtype bytes x tokens (max_model_len, else the model's
    max_position_embeddings); the dtype is --kv-cache-dtype when set (not auto), else the model's."""
    text = _text_config(config)
    layers = int(text.get("num_hidden_layers") or text.get("n_layer") or 0)
    heads = int(text.get("num_attention_heads") or text.get("n_head") or 1)
    kv_heads = int(text.get("num_key_value_heads") or heads)
    head_dim = int(text.get("head_dim") or (int(text.get("hidden_size") or 0) // max(heads, 1)))
    dtype = (kv_cache_dtype if kv_cache_dtype and kv_cache_dtype != "auto" else None) or str(
        text.get("torch_dtype") or text.get("dtype") or "bfloat16"
    )
    dtype_bytes = DTYPE_BYTES.get(dtype.lower(), 2)
    tokens = int(max_model_len or text.get("max_position_embeddings") or 0)
    kv = layers * 2 * kv_heads * head_dim * dtype_bytes * tokens
    return FitEstimate(
        weights_bytes=int(weights_bytes),
        kv_cache_bytes=kv,
        tokens=tokens,
        layers=layers,
        kv_heads=kv_heads,
        head_dim=head_dim,
        dtype_bytes=dtype_bytes,
        nodes=nodes,
        memory_bytes=int(memory_bytes),
        utilization=float(gpu_memory_utilization),
    )
