// webbuild replacement for TVM's src/support/ring_buffer.h: a growable FIFO byte
// queue with callback-based transfer (used by the RPC endpoint).
#ifndef WEBBUILD_SUPPORT_RING_BUFFER_H_
#define WEBBUILD_SUPPORT_RING_BUFFER_H_

#include <algorithm>
#include <cstring>
#include <vector>

namespace tvm {
namespace support {

class RingBuffer {
 public:
  RingBuffer() : buf_(kInitialCapacity) {}

  // Number of bytes queued and not yet read.
  size_t bytes_available() const { return count_; }

  // Make room for at least n queued bytes in total.
  void Reserve(size_t n) {
    if (n <= buf_.size()) return;
    size_t cap = buf_.size();
    while (cap < n) cap *= 2;
    std::vector<char> grown(cap);
    CopyOut(grown.data(), count_);
    buf_.swap(grown);
    head_ = 0;
  }

  // Removes `size` bytes (must be available) into `data`.
  void Read(void* data, size_t size) {
    CopyOut(static_cast<char*>(data), size);
    Drop(size);
  }

  // Appends `size` bytes.
  void Write(const void* data, size_t size) {
    Reserve(count_ + size);
    const char* src = static_cast<const char*>(data);
    size_t tail = (head_ + count_) % buf_.size();
    size_t first = std::min(size, buf_.size() - tail);
    std::memcpy(buf_.data() + tail, src, first);
    std::memcpy(buf_.data(), src + first, size - first);
    count_ += size;
  }

  // Hands up to max_nbytes contiguous queued bytes to f(const void*, size_t) -> consumed,
  // drops what f consumed and returns that count.
  template <typename F>
  size_t ReadWithCallback(F f, size_t max_nbytes) {
    size_t n = std::min(max_nbytes, std::min(count_, buf_.size() - head_));
    if (n == 0) return 0;
    size_t used = f(static_cast<const void*>(buf_.data() + head_), n);
    Drop(used);
    return used;
  }

  // Lets f(void*, size_t) -> produced fill up to max_nbytes contiguous free bytes,
  // queues what it produced and returns that count.
  template <typename F>
  size_t WriteWithCallback(F f, size_t max_nbytes) {
    Reserve(count_ + max_nbytes);
    size_t tail = (head_ + count_) % buf_.size();
    size_t room = tail >= head_ && count_ != buf_.size() ? buf_.size() - tail : head_ - tail;
    size_t n = std::min(max_nbytes, room);
    size_t got = f(static_cast<void*>(buf_.data() + tail), n);
    count_ += got;
    return got;
  }

 private:
  static constexpr size_t kInitialCapacity = 1024;

  void CopyOut(char* dst, size_t size) const {
    size_t first = std::min(size, buf_.size() - head_);
    std::memcpy(dst, buf_.data() + head_, first);
    std::memcpy(dst + first, buf_.data(), size - first);
  }
  void Drop(size_t size) {
    count_ -= size;
    head_ = count_ == 0 ? 0 : (head_ + size) % buf_.size();
  }

  std::vector<char> buf_;
  size_t head_ = 0;
  size_t count_ = 0;
};

}  // namespace support
}  // namespace tvm

#endif  // WEBBUILD_SUPPORT_RING_BUFFER_H_
