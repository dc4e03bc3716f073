"""The parsers on real-format samples: vLLM's /metrics (v0 and v1 names), nvidia-smi's CSV, meminfo, loadavg."""

from __future__ import annotations

import pytest

from telemetry.collectors import parse_engine_metrics, parse_node_output

# As vLLM's V1 engine writes it (prometheus-client exposition: HELP/TYPE lines, labels, _created samples).
VLLM_V1 = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="qwen3-30b"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="qwen3-30b"} 2.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="qwen3-30b"} 0.125
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="qwen3-30b"} 1234.0
# HELP vllm:prompt_tokens_created Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_created gauge
vllm:prompt_tokens_created{engine="0",model_name="qwen3-30b"} 1.7644e+09
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="qwen3-30b"} 5678.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="qwen3-30b"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="qwen3-30b"} 7.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="qwen3-30b"} 7.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="qwen3-30b"} 0.41
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 12345.0
"""

# vLLM's V0 engine: gpu_cache_usage_perc, no engine label.
VLLM_V0 = """\
# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="llama"} 1.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="llama"} 0.0
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="llama"} 0.5
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{model_name="llama"} 42.0
"""

# Two data-parallel engines: gauges and counters add up, the KV cache use is their mean.
VLLM_TWO_ENGINES = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 2.0
vllm:num_requests_running{engine="1",model_name="m"} 5.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.2
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.4
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="m"} 10.0
vllm:generation_tokens_total{engine="1",model_name="m"} 30.0
"""


def test_vllm_v1_metrics():
    load = parse_engine_metrics(VLLM_V1)
    assert load is not None
    assert (load.requests_running, load.requests_waiting) == (3.0, 2.0)
    assert load.kv_cache_usage_percent == pytest.approx(12.5)
    assert (load.prompt_tokens, load.generation_tokens) == (1234.0, 5678.0)


def test_vllm_v0_metrics_name_the_cache_gauge_differently():
    load = parse_engine_metrics(VLLM_V0)
    assert load is not None
    assert load.kv_cache_usage_percent == pytest.approx(50.0)
    assert load.generation_tokens == 42.0 and load.prompt_tokens is None


def test_engines_are_summed_and_the_cache_averaged():
    load = parse_engine_metrics(VLLM_TWO_ENGINES)
    assert load is not None
    assert load.requests_running == 7.0 and load.generation_tokens == 40.0
    assert load.kv_cache_usage_percent == pytest.approx(30.0)


@pytest.mark.parametrize("text", ["", "<html>not metrics</html>", "# TYPE x gauge\nx{ 1\n", "python_info 1.0\n"])
def test_pages_without_vllm_figures_give_none(text):
    assert parse_engine_metrics(text) is None


# `nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits` on a GB10, then the meminfo lines and
# /proc/loadavg, separated as NODE_COMMAND prints them.
NODE_OUTPUT = """\
37
@@meminfo
MemTotal:       128524288 kB
MemAvailable:    96524288 kB
@@loadavg
1.25 0.80 0.40 2/1234 56789
"""


def test_node_output():
    load = parse_node_output(NODE_OUTPUT)
    assert load.gpu_busy_percent == 37.0
    assert load.memory_total_bytes == 128524288 * 1024
    assert load.memory_used_bytes == (128524288 - 96524288) * 1024
    assert load.load_1m == 1.25


def test_several_gpus_are_averaged_and_unknowns_left_out():
    load = parse_node_output("10\n30\n[N/A]\n@@meminfo\n@@loadavg\n")
    assert load.gpu_busy_percent == 20.0
    assert load.memory_used_bytes is None and load.load_1m is None


@pytest.mark.parametrize(
    "gpu", ["[N/A]", "[Not Supported]", "", "NVIDIA-SMI has failed because it couldn't communicate"]
)
def test_a_gpu_without_a_figure_is_unknown_not_zero(gpu):
    load = parse_node_output(f"{gpu}\n@@meminfo\nMemTotal: 100 kB\nMemAvailable: 40 kB\n@@loadavg\n0.5 0.1 0.1 1/2 3\n")
    assert load.gpu_busy_percent is None
    assert load.memory_used_bytes == 60 * 1024


def test_garbled_output_gives_unknowns():
    load = parse_node_output("bash: nvidia-smi: command not found\n")
    assert load == type(load)()
