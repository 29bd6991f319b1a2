// webbuild replacement for <tvm/support/io.h> (not shipped in the apache-tvm wheel).
// Written for webbuild; provides only what TVM's web runtime sources use:
// an abstract byte stream whose typed Read/Write go through Serializer<T>.
#ifndef WEBBUILD_TVM_SUPPORT_IO_H_
#define WEBBUILD_TVM_SUPPORT_IO_H_

#include <cstddef>
#include <cstdint>

namespace tvm {
namespace support {

// Serializer<T> is specialised per type (see serializer.h). A usable
// specialisation has `enabled = true` and static Write(Stream*, const T&) /
// Read(Stream*, T*) -> bool.
template <typename T, typename Enable = void>
struct Serializer {
  static constexpr bool enabled = false;
};

class Stream {
 public:
  virtual ~Stream() = default;
  // Raw byte I/O; return the number of bytes transferred.
  virtual size_t Read(void* ptr, size_t size) = 0;
  virtual size_t Write(const void* ptr, size_t size) = 0;

  template <typename T>
  void Write(const T& value) {
    static_assert(Serializer<T>::enabled, "type has no Serializer");
    Serializer<T>::Write(this, value);
  }

  template <typename T>
  bool Read(T* out) {
    static_assert(Serializer<T>::enabled, "type has no Serializer");
    return Serializer<T>::Read(this, out);
  }

  template <typename T>
  void WriteArray(const T* values, size_t count) {
    for (size_t i = 0; i < count; ++i) this->Write<T>(values[i]);
  }

  template <typename T>
  bool ReadArray(T* values, size_t count) {
    for (size_t i = 0; i < count; ++i) {
      if (!this->Read<T>(values + i)) return false;
    }
    return true;
  }
};

}  // namespace support
}  // namespace tvm

#endif  // WEBBUILD_TVM_SUPPORT_IO_H_
