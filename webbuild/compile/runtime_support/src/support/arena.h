// webbuild replacement for TVM's src/support/arena.h: a bump allocator for
// trivially-destructible scratch data (used by the RPC endpoint).
#ifndef WEBBUILD_SUPPORT_ARENA_H_
#define WEBBUILD_SUPPORT_ARENA_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

namespace tvm {
namespace support {

class Arena {
 public:
  Arena() = default;
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  // Storage for `count` objects of T, valid until RecycleAll().
  template <typename T>
  T* allocate_(size_t count = 1) {
    static_assert(std::is_trivially_destructible<T>::value, "arena holds trivial types only");
    void* p = Take(sizeof(T) * count, alignof(T));
    return static_cast<T*>(p);
  }

  // Forget all allocations; the first block is kept for reuse.
  void RecycleAll() {
    if (blocks_.size() > 1) blocks_.resize(1);
    used_ = 0;
  }

 private:
  static constexpr size_t kBlock = 4096;
  struct Block {
    std::unique_ptr<std::max_align_t[]> mem;
    size_t size;
  };

  void* Take(size_t nbytes, size_t align) {
    if (nbytes == 0) nbytes = 1;
    if (!blocks_.empty()) {
      Block& b = blocks_.back();
      size_t start = (used_ + align - 1) / align * align;
      if (start + nbytes <= b.size) {
        used_ = start + nbytes;
        return reinterpret_cast<char*>(b.mem.get()) + start;
      }
    }
    size_t size = nbytes + align > kBlock ? nbytes + align : kBlock;
    size_t units = (size + sizeof(std::max_align_t) - 1) / sizeof(std::max_align_t);
    blocks_.push_back(Block{std::unique_ptr<std::max_align_t[]>(new std::max_align_t[units]),
                            units * sizeof(std::max_align_t)});
    used_ = 0;
    return Take(nbytes, align);
  }

  std::vector<Block> blocks_;
  size_t used_ = 0;
};

}  // namespace support
}  // namespace tvm

#endif  // WEBBUILD_SUPPORT_ARENA_H_
