/*
 * webbuild's thread pool for TVM's parallel loops in the browser's CPU module.
 *
 * TVM's web runtime runs every parallel loop on one thread (its TVMBackendParallelLaunch calls the
 * loop body once). This file replaces that function. In a module linked with shared memory
 * (model-cpu-threads.wasm), the JS side instantiates the same module once more in each Web Worker
 * on the same memory, gives each instance its own stack and TLS block, and calls
 * webbuild_thread_main(id) there: the worker then runs task `id` of every parallel loop the main
 * instance launches. Without workers (model-cpu.wasm, or threads not enabled) loops run serially.
 *
 * Hand-off: a launch publishes the loop body and bumps `generation`; workers spin a while on it,
 * then sleep in memory.atomic.wait32 (a sleeper count lets the launcher skip the notify when all
 * are spinning). The launcher runs task 0 itself and spins until every worker has finished (the
 * browser's main thread may not block in atomic.wait). Every launch uses all workers, so each
 * worker takes part in every generation exactly once.
 *
 * Worker instances run only the loop bodies, which must not reach emscripten's single-threaded
 * malloc: their workspace buffers (TVMBackendAllocWorkspace, e.g. a dequantized weight tile)
 * come from a private arena per worker, allocated and freed in LIFO order as TVM's code does.
 * The single-threaded runtime flavour (compiled without atomics) keeps only the serial launch.
 * A worker is recognised by its stack (each instance has its own stack pointer; thread-locals are
 * not used here, since the single-threaded links lower them to plain globals).
 *
 * The main instance's CPU workspace buffers come from an arena too (both flavours): TVM's
 * WorkspacePool rounds every request up to a page, searches its free list and frees and
 * reallocates a cached page that is too small; with the device lookups around it that was ~10% of
 * the sampled time of a WASM decode step (the matmul kernels allocate on every call), and the arena
 * made decode ~1.6x faster. Requests that do not fit the main arena, and other devices, go to
 * TVM's pool.
 */
#include <tvm/runtime/c_backend_api.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>

// TVM's own workspace functions (src/runtime/device_api.cc, renamed when the runtime is staged).
void* TVMBackendAllocWorkspaceDefault(int device_type, int device_id, uint64_t size, int dtype_code_hint,
                                      int dtype_bits_hint);
int TVMBackendFreeWorkspaceDefault(int device_type, int device_id, void* ptr);

namespace {

/*! \brief A LIFO bump allocator over [base, base + size): TVM frees workspace buffers in the
 *  reverse order of their allocation. */
struct Arena {
  char* base = nullptr;
  size_t size = 0;
  size_t top = 0;
};

constexpr size_t kMainArenaBytes = size_t{1} << 20;
constexpr int kDLCPUDevice = 1;
Arena main_arena;

void* arena_alloc(Arena* arena, uint64_t size) {
  size_t start = (arena->top + 63) / 64 * 64;
  if (start + size > arena->size) return nullptr;
  arena->top = start + size;
  return arena->base + start;
}

void arena_free(Arena* arena, void* ptr) { arena->top = static_cast<size_t>(static_cast<char*>(ptr) - arena->base); }

bool in_arena(const Arena& arena, void* ptr) {
  char* p = static_cast<char*>(ptr);
  return arena.base != nullptr && p >= arena.base && p <= arena.base + arena.size;
}

/*! \brief The main instance's workspace: its arena (made on first use) for CPU buffers that fit. */
void* main_alloc(int device_type, int device_id, uint64_t size, int dtype_code_hint, int dtype_bits_hint) {
  if (device_type == kDLCPUDevice) {
    if (main_arena.base == nullptr && main_arena.size == 0) {
      main_arena.base = static_cast<char*>(aligned_alloc(64, kMainArenaBytes));
      main_arena.size = main_arena.base != nullptr ? kMainArenaBytes : 1;  // 1: no arena, do not retry
    }
    if (main_arena.base != nullptr) {
      if (void* ptr = arena_alloc(&main_arena, size)) return ptr;
    }
  }
  return TVMBackendAllocWorkspaceDefault(device_type, device_id, size, dtype_code_hint, dtype_bits_hint);
}

int main_free(int device_type, int device_id, void* ptr) {
  if (in_arena(main_arena, ptr)) {
    arena_free(&main_arena, ptr);
    return 0;
  }
  return TVMBackendFreeWorkspaceDefault(device_type, device_id, ptr);
}

}  // namespace

#ifndef __wasm_atomics__

extern "C" {

int TVMBackendParallelLaunch(FTVMParallelLambda flambda, void* cdata, int num_task) {
  (void)num_task;
  TVMParallelGroupEnv env{nullptr, 1};
  return flambda(0, &env, cdata);
}

int TVMBackendParallelBarrier(int task_id, TVMParallelGroupEnv* penv) { return 0; }

void* TVMBackendAllocWorkspace(int device_type, int device_id, uint64_t size, int dtype_code_hint,
                               int dtype_bits_hint) {
  return main_alloc(device_type, device_id, size, dtype_code_hint, dtype_bits_hint);
}

int TVMBackendFreeWorkspace(int device_type, int device_id, void* ptr) { return main_free(device_type, device_id, ptr); }

}  // extern "C"

#else  // __wasm_atomics__: the threaded flavour

namespace {

constexpr int kMaxWorkers = 64;
constexpr int32_t kDefaultSpins = 1 << 17;  // checks of `generation` before a worker sleeps (~0.1 ms)

struct Pool {
  std::atomic<int32_t> generation{0};  // bumped by every launch that involves workers
  std::atomic<int32_t> remaining{0};   // workers still running the current launch
  std::atomic<int32_t> sleepers{0};    // workers blocked in atomic.wait
  std::atomic<int32_t> entered{0};     // workers that have reached their loop
  std::atomic<int32_t> failed{0};      // a worker's task returned non-zero in this launch
  int32_t num_workers = 0;             // workers that take part in launches
  std::atomic<int32_t> spins{kDefaultSpins};
  bool in_launch = false;              // nested parallel loops run serially
  FTVMParallelLambda lambda = nullptr;
  void* cdata = nullptr;
  int32_t num_task = 1;
  // TVMBackendParallelBarrier: a counting barrier over the tasks of the current launch
  std::atomic<int32_t> barrier_count{0};
  std::atomic<int32_t> barrier_phase{0};
};

Pool pool;

inline int32_t* raw(std::atomic<int32_t>& a) { return reinterpret_cast<int32_t*>(&a); }

struct Worker {
  uintptr_t stack_lo = 0, stack_hi = 0;
  Arena arena;
};

Worker workers[kMaxWorkers];
std::atomic<int32_t> registered{0};  // workers[0, registered) may be in use

/*! \brief The arena of the worker whose stack holds this call's frame; null on the main thread. */
Arena* current_arena() {
  volatile char probe = 0;
  uintptr_t sp = reinterpret_cast<uintptr_t>(&probe);
  int32_t n = registered.load(std::memory_order_acquire);
  for (int32_t i = 0; i < n; ++i) {
    if (sp >= workers[i].stack_lo && sp < workers[i].stack_hi) return &workers[i].arena;
  }
  return nullptr;
}

}  // namespace

extern "C" {

void* TVMBackendAllocWorkspace(int device_type, int device_id, uint64_t size, int dtype_code_hint,
                               int dtype_bits_hint) {
  Arena* arena = current_arena();
  if (arena == nullptr) return main_alloc(device_type, device_id, size, dtype_code_hint, dtype_bits_hint);
  return arena_alloc(arena, size);  // nullptr when full: TVM's code reports the failed allocation
}

int TVMBackendFreeWorkspace(int device_type, int device_id, void* ptr) {
  Arena* arena = current_arena();
  if (arena == nullptr) return main_free(device_type, device_id, ptr);
  arena_free(arena, ptr);
  return 0;
}

int TVMBackendParallelLaunch(FTVMParallelLambda flambda, void* cdata, int num_task) {
  (void)num_task;  // TVM passes 0 (= as many as there are threads); every worker takes part
  if (pool.num_workers == 0 || pool.in_launch) {
    TVMParallelGroupEnv env{nullptr, 1};
    return flambda(0, &env, cdata);
  }
  pool.in_launch = true;
  pool.lambda = flambda;
  pool.cdata = cdata;
  pool.num_task = pool.num_workers + 1;
  pool.failed.store(0, std::memory_order_relaxed);
  pool.remaining.store(pool.num_workers, std::memory_order_relaxed);
  pool.generation.fetch_add(1, std::memory_order_seq_cst);
  if (pool.sleepers.load(std::memory_order_seq_cst) > 0) {
    __builtin_wasm_memory_atomic_notify(raw(pool.generation), pool.num_workers);
  }
  TVMParallelGroupEnv env{nullptr, pool.num_task};
  int rc = flambda(0, &env, cdata);
  while (pool.remaining.load(std::memory_order_acquire) != 0) {
  }
  pool.in_launch = false;
  return rc != 0 ? rc : pool.failed.load(std::memory_order_relaxed);
}

int TVMBackendParallelBarrier(int task_id, TVMParallelGroupEnv* penv) {
  (void)task_id;
  if (penv->num_task <= 1) return 0;
  int32_t phase = pool.barrier_phase.load(std::memory_order_acquire);
  if (pool.barrier_count.fetch_add(1, std::memory_order_acq_rel) + 1 == penv->num_task) {
    pool.barrier_count.store(0, std::memory_order_relaxed);
    pool.barrier_phase.fetch_add(1, std::memory_order_release);
  } else {
    while (pool.barrier_phase.load(std::memory_order_acquire) == phase) {
    }
  }
  return 0;
}

/*! \brief `bytes` of memory aligned to 64 bytes, for a worker's stack or an instance's TLS block
 *  (whose size the shared-memory module exports as __tls_size); 0 when out of memory. */
__attribute__((export_name("webbuild_thread_alloc"))) void* webbuild_thread_alloc(int32_t bytes) {
  return aligned_alloc(64, (static_cast<size_t>(bytes) + 63) / 64 * 64);
}

/*! \brief The loop of worker `id` (1-based task index): its stack is [stack, stack + stack_bytes)
 *  (already this instance's stack pointer), its workspace `arena_bytes` at `arena`. Never returns. */
__attribute__((export_name("webbuild_thread_main"))) void webbuild_thread_main(int32_t id, void* stack,
                                                                                int32_t stack_bytes, void* arena,
                                                                                int32_t arena_bytes) {
  if (id < 1 || id > kMaxWorkers) return;
  Worker& self = workers[id - 1];
  self.stack_lo = reinterpret_cast<uintptr_t>(stack);
  self.stack_hi = self.stack_lo + static_cast<uintptr_t>(stack_bytes);
  self.arena.base = static_cast<char*>(arena);
  self.arena.size = static_cast<size_t>(arena_bytes);
  self.arena.top = 0;
  for (int32_t n = registered.load(); n < id && !registered.compare_exchange_weak(n, id);) {
  }
  int32_t seen = pool.generation.load(std::memory_order_acquire);
  pool.entered.fetch_add(1, std::memory_order_release);
  for (;;) {
    int32_t now = seen;
    int32_t limit = pool.spins.load(std::memory_order_relaxed);
    for (int32_t spin = 0; spin < limit && now == seen; ++spin) {
      now = pool.generation.load(std::memory_order_acquire);
    }
    while (now == seen) {
      pool.sleepers.fetch_add(1, std::memory_order_seq_cst);
      __builtin_wasm_memory_atomic_wait32(raw(pool.generation), seen, -1);
      pool.sleepers.fetch_sub(1, std::memory_order_seq_cst);
      now = pool.generation.load(std::memory_order_acquire);
    }
    seen = now;
    TVMParallelGroupEnv env{nullptr, pool.num_task};
    if (pool.lambda(id, &env, pool.cdata) != 0) pool.failed.store(-1, std::memory_order_relaxed);
    pool.remaining.fetch_sub(1, std::memory_order_acq_rel);
  }
}

/*! \brief Workers that have reached their loop (the JS side waits for all it started). */
__attribute__((export_name("webbuild_threads_entered"))) int32_t webbuild_threads_entered() {
  return pool.entered.load(std::memory_order_acquire);
}

/*! \brief Let up to `n` workers that have reached their loop take part in launches (0: none).
 *  Returns the number in use. Call it between launches. */
__attribute__((export_name("webbuild_threads_enable"))) int32_t webbuild_threads_enable(int32_t n) {
  int32_t entered = pool.entered.load(std::memory_order_acquire);
  if (n > entered) n = entered;
  if (n > kMaxWorkers) n = kMaxWorkers;
  pool.num_workers = n < 0 ? 0 : n;
  return pool.num_workers;
}

/*! \brief How long idle workers spin before they sleep, in checks (0: sleep at once). */
__attribute__((export_name("webbuild_threads_set_spins"))) void webbuild_threads_set_spins(int32_t spins) {
  pool.spins.store(spins < 0 ? 0 : spins, std::memory_order_relaxed);
}

/*! \brief Workers in use (0: loops run on the calling thread only). */
__attribute__((export_name("webbuild_threads_count"))) int32_t webbuild_threads_count() {
  return pool.num_workers;
}

}  // extern "C"

#endif  // __wasm_atomics__
