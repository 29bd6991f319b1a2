// webbuild replacement for TVM's src/support/bytes_io.h: streams over memory.
#ifndef WEBBUILD_SUPPORT_BYTES_IO_H_
#define WEBBUILD_SUPPORT_BYTES_IO_H_

#include <tvm/ffi/error.h>
#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <cstring>
#include <string>

namespace tvm {
namespace support {

// Reads sequentially from a memory region the caller keeps alive.
class BytesInStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  BytesInStream(const void* data, size_t size)
      : begin_(static_cast<const char*>(data)), end_(begin_ + size), cur_(begin_) {}
  explicit BytesInStream(const std::string& s) : BytesInStream(s.data(), s.size()) {}
  explicit BytesInStream(const ffi::Bytes& b) : BytesInStream(b.data(), b.size()) {}

  size_t Read(void* ptr, size_t size) override {
    size_t left = static_cast<size_t>(end_ - cur_);
    size_t n = size < left ? size : left;
    if (n) std::memcpy(ptr, cur_, n);
    cur_ += n;
    return n;
  }
  size_t Write(const void*, size_t) override {
    TVM_FFI_THROW(InternalError) << "BytesInStream is read-only";
    return 0;
  }

 private:
  const char* begin_;
  const char* end_;
  const char* cur_;
};

// Appends everything written to a std::string owned by the caller.
class BytesOutStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit BytesOutStream(std::string* sink) : sink_(sink) {}

  size_t Write(const void* ptr, size_t size) override {
    sink_->append(static_cast<const char*>(ptr), size);
    return size;
  }
  size_t Read(void*, size_t) override {
    TVM_FFI_THROW(InternalError) << "BytesOutStream is write-only";
    return 0;
  }

 private:
  std::string* sink_;
};

}  // namespace support
}  // namespace tvm

#endif  // WEBBUILD_SUPPORT_BYTES_IO_H_
