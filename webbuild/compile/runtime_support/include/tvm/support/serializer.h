// webbuild replacement for <tvm/support/serializer.h> (not shipped in the apache-tvm wheel).
// Written for webbuild. Binary layout (must match what the TVM compiler writes):
//   scalars and enums: little-endian bytes of the value (enums as their underlying type)
//   strings, vectors, arrays: uint64 element count, then the elements
//   pairs: first then second; maps: uint64 count, then key/value pairs
//   DLDataType: u8 code, u8 bits, u16 lanes; DLDevice: i32 type, i32 id
#ifndef WEBBUILD_TVM_SUPPORT_SERIALIZER_H_
#define WEBBUILD_TVM_SUPPORT_SERIALIZER_H_

#include <dlpack/dlpack.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/endian.h>
#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tvm {
namespace support {
namespace wb_detail {

inline bool ReadCount(Stream* s, uint64_t* n);
inline void WriteCount(Stream* s, uint64_t n);

}  // namespace wb_detail

template <typename T>
struct Serializer<T, std::enable_if_t<std::is_arithmetic_v<T>>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const T& v) {
    T tmp = v;
    if (!TVM_FFI_IO_NO_ENDIAN_SWAP) ffi::ByteSwap(&tmp, sizeof(T), 1);
    s->Write(static_cast<const void*>(&tmp), sizeof(T));
  }
  static bool Read(Stream* s, T* v) {
    if (s->Read(static_cast<void*>(v), sizeof(T)) != sizeof(T)) return false;
    if (!TVM_FFI_IO_NO_ENDIAN_SWAP) ffi::ByteSwap(v, sizeof(T), 1);
    return true;
  }
};

template <typename T>
struct Serializer<T, std::enable_if_t<std::is_enum_v<T>>> {
  static constexpr bool enabled = true;
  using Int = std::underlying_type_t<T>;
  static void Write(Stream* s, const T& v) { Serializer<Int>::Write(s, static_cast<Int>(v)); }
  static bool Read(Stream* s, T* v) {
    Int raw;
    if (!Serializer<Int>::Read(s, &raw)) return false;
    *v = static_cast<T>(raw);
    return true;
  }
};

namespace wb_detail {
inline bool ReadCount(Stream* s, uint64_t* n) { return Serializer<uint64_t>::Read(s, n); }
inline void WriteCount(Stream* s, uint64_t n) { Serializer<uint64_t>::Write(s, n); }

inline void WriteChars(Stream* s, const char* data, size_t n) {
  WriteCount(s, n);
  if (n) s->Write(static_cast<const void*>(data), n);
}
inline bool ReadChars(Stream* s, std::string* out) {
  uint64_t n;
  if (!ReadCount(s, &n)) return false;
  out->assign(static_cast<size_t>(n), '\0');
  if (n == 0) return true;
  return s->Read(static_cast<void*>(&(*out)[0]), out->size()) == out->size();
}
}  // namespace wb_detail

template <>
struct Serializer<std::string> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const std::string& v) { wb_detail::WriteChars(s, v.data(), v.size()); }
  static bool Read(Stream* s, std::string* v) { return wb_detail::ReadChars(s, v); }
};

template <>
struct Serializer<ffi::String> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const ffi::String& v) { wb_detail::WriteChars(s, v.data(), v.size()); }
  static bool Read(Stream* s, ffi::String* v) {
    std::string tmp;
    if (!wb_detail::ReadChars(s, &tmp)) return false;
    *v = ffi::String(std::move(tmp));
    return true;
  }
};

template <typename T>
struct Serializer<std::vector<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const std::vector<T>& v) {
    wb_detail::WriteCount(s, v.size());
    for (const T& x : v) Serializer<T>::Write(s, x);
  }
  static bool Read(Stream* s, std::vector<T>* v) {
    uint64_t n;
    if (!wb_detail::ReadCount(s, &n)) return false;
    v->clear();
    v->resize(static_cast<size_t>(n));
    for (auto& x : *v) {
      if (!Serializer<T>::Read(s, &x)) return false;
    }
    return true;
  }
};

template <typename A, typename B>
struct Serializer<std::pair<A, B>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const std::pair<A, B>& v) {
    Serializer<A>::Write(s, v.first);
    Serializer<B>::Write(s, v.second);
  }
  static bool Read(Stream* s, std::pair<A, B>* v) {
    return Serializer<A>::Read(s, &v->first) && Serializer<B>::Read(s, &v->second);
  }
};

template <typename K, typename V>
struct Serializer<std::unordered_map<K, V>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const std::unordered_map<K, V>& m) {
    wb_detail::WriteCount(s, m.size());
    for (const auto& kv : m) {
      Serializer<K>::Write(s, kv.first);
      Serializer<V>::Write(s, kv.second);
    }
  }
  static bool Read(Stream* s, std::unordered_map<K, V>* m) {
    uint64_t n;
    if (!wb_detail::ReadCount(s, &n)) return false;
    m->clear();
    for (uint64_t i = 0; i < n; ++i) {
      K k;
      V v;
      if (!Serializer<K>::Read(s, &k) || !Serializer<V>::Read(s, &v)) return false;
      (*m)[std::move(k)] = std::move(v);
    }
    return true;
  }
};

template <typename T>
struct Serializer<ffi::Array<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const ffi::Array<T>& v) {
    wb_detail::WriteCount(s, v.size());
    for (const T& x : v) Serializer<T>::Write(s, x);
  }
  static bool Read(Stream* s, ffi::Array<T>* v) {
    uint64_t n;
    if (!wb_detail::ReadCount(s, &n)) return false;
    std::vector<T> items(static_cast<size_t>(n));
    for (auto& x : items) {
      if (!Serializer<T>::Read(s, &x)) return false;
    }
    *v = ffi::Array<T>(items.begin(), items.end());
    return true;
  }
};

template <typename K, typename V>
struct Serializer<ffi::Map<K, V>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const ffi::Map<K, V>& m) {
    wb_detail::WriteCount(s, m.size());
    for (const auto& kv : m) {
      Serializer<K>::Write(s, kv.first);
      Serializer<V>::Write(s, kv.second);
    }
  }
  static bool Read(Stream* s, ffi::Map<K, V>* m) {
    uint64_t n;
    if (!wb_detail::ReadCount(s, &n)) return false;
    ffi::Map<K, V> out;
    for (uint64_t i = 0; i < n; ++i) {
      K k;
      V v;
      if (!Serializer<K>::Read(s, &k) || !Serializer<V>::Read(s, &v)) return false;
      out.Set(std::move(k), std::move(v));
    }
    *m = std::move(out);
    return true;
  }
};

template <>
struct Serializer<DLDataType> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const DLDataType& t) {
    Serializer<uint8_t>::Write(s, t.code);
    Serializer<uint8_t>::Write(s, t.bits);
    Serializer<uint16_t>::Write(s, t.lanes);
  }
  static bool Read(Stream* s, DLDataType* t) {
    return Serializer<uint8_t>::Read(s, &t->code) && Serializer<uint8_t>::Read(s, &t->bits) &&
           Serializer<uint16_t>::Read(s, &t->lanes);
  }
};

template <>
struct Serializer<DLDevice> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const DLDevice& d) {
    Serializer<int32_t>::Write(s, static_cast<int32_t>(d.device_type));
    Serializer<int32_t>::Write(s, static_cast<int32_t>(d.device_id));
  }
  static bool Read(Stream* s, DLDevice* d) {
    int32_t type, id;
    if (!Serializer<int32_t>::Read(s, &type) || !Serializer<int32_t>::Read(s, &id)) return false;
    d->device_type = static_cast<DLDeviceType>(type);
    d->device_id = id;
    return true;
  }
};

}  // namespace support
}  // namespace tvm

#endif  // WEBBUILD_TVM_SUPPORT_SERIALIZER_H_
