"""The KV-cache page size: part of the build/runtime contract.

TVM's paged KV-cache kernels (and webbuild's fused decode attention) are generated for pages of
`KV_PAGE_SIZE` tokens. Every backend writes it into its modules' `_metadata` as `kv_page_size`;
runtimes read it from there and pass it to `create_paged_kv_cache`.
"""

KV_PAGE_SIZE = 16
