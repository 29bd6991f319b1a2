"""webbuild's hand-written TIR/TE kernels and schedules, one job per file.

- decode_gemv: WebGPU one-token GEMVs with their norm / activation / bias / residual fused in;
- prefill_gemm: WebGPU many-token (prefill) matmuls of group-quantized weights, barrier-free;
- decode_attention: WebGPU one-token attention (split + RoPE + KV append + paged attention);
- cpu_matmul: CPU (wasm32 SIMD128 and native) int4 matmul kernels and matmul schedules;
- argmax: greedy decoding on the device; token_bitmask: a grammar's token mask applied on the device;
- wkv: RWKV's recurrence;
- paged_kv_cache / kv_page: TVM's paged KV cache for a model's geometry, and its page size;
- model_kernels: the per-target choice of these that a backend hands to a model.

Each kernel's numerical reference (numpy, or TVM's own kernels) sits in its test.
"""
