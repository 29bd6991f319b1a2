// webbuild replacement for TVM's src/support/base64.h: standard (RFC 4648, padded)
// base64 encoding/decoding layered over another Stream. Used by the tensor JSON hooks.
#ifndef WEBBUILD_SUPPORT_BASE64_H_
#define WEBBUILD_SUPPORT_BASE64_H_

#include <tvm/ffi/error.h>
#include <tvm/support/io.h>

#include <cctype>
#include <cstdint>

namespace tvm {
namespace support {
namespace b64 {

inline char Encode6(uint32_t v) {
  static const char kTable[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  return kTable[v & 63u];
}

// Returns 0..63 for an alphabet character, -1 otherwise.
inline int Decode6(int c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

}  // namespace b64

class Base64OutStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit Base64OutStream(Stream* out) : out_(out) {}

  size_t Write(const void* ptr, size_t size) override {
    const unsigned char* p = static_cast<const unsigned char*>(ptr);
    for (size_t i = 0; i < size; ++i) {
      group_ = (group_ << 8) | p[i];
      if (++pending_ == 3) Emit(4);
    }
    return size;
  }
  size_t Read(void*, size_t) override {
    TVM_FFI_THROW(InternalError) << "Base64OutStream is write-only";
    return 0;
  }
  // Writes the final partial group with '=' padding.
  void Finish() {
    if (pending_ == 0) return;
    int have = pending_;
    group_ <<= 8 * (3 - have);
    Emit(have + 1);
    for (int i = have + 1; i < 4; ++i) Put('=');
  }

 private:
  void Emit(int nchars) {
    for (int i = 0; i < nchars; ++i) Put(b64::Encode6(group_ >> (18 - 6 * i)));
    group_ = 0;
    pending_ = 0;
  }
  void Put(char c) { out_->Write(static_cast<const void*>(&c), 1); }

  Stream* out_;
  uint32_t group_ = 0;
  int pending_ = 0;
};

class Base64InStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit Base64InStream(Stream* in) : in_(in) {}

  // Skips leading whitespace before the encoded text.
  void InitPosition() {
    do {
      next_ = GetRaw();
    } while (next_ >= 0 && std::isspace(next_));
  }

  size_t Read(void* ptr, size_t size) override {
    unsigned char* p = static_cast<unsigned char*>(ptr);
    size_t n = 0;
    while (n < size) {
      if (avail_ == 0 && !Refill()) break;
      p[n++] = static_cast<unsigned char>(buf_ >> (8 * (--avail_)));
    }
    return n;
  }
  size_t Write(const void*, size_t) override {
    TVM_FFI_THROW(InternalError) << "Base64InStream is read-only";
    return 0;
  }

 private:
  int GetRaw() {
    char c;
    return in_->Read(static_cast<void*>(&c), 1) == 1 ? static_cast<unsigned char>(c) : -1;
  }
  int NextChar() {
    if (next_ == kUnread) InitPosition();
    int c = next_;
    next_ = c < 0 ? -1 : GetRaw();
    return c;
  }
  // Decodes one 4-character group into up to 3 bytes.
  bool Refill() {
    if (done_) return false;
    uint32_t group = 0;
    int nvalid = 0;
    for (int i = 0; i < 4; ++i) {
      int c = NextChar();
      int v = c < 0 ? -1 : b64::Decode6(c);
      if (v < 0) {
        done_ = true;
        group <<= 6 * (4 - i);
        break;
      }
      group = (group << 6) | static_cast<uint32_t>(v);
      ++nvalid;
    }
    if (nvalid < 2) return false;
    int nbytes = nvalid - 1;
    buf_ = group >> (8 * (3 - nbytes));
    avail_ = nbytes;
    return true;
  }

  static constexpr int kUnread = -2;
  Stream* in_;
  int next_ = kUnread;
  uint32_t buf_ = 0;
  int avail_ = 0;
  bool done_ = false;
};

}  // namespace support
}  // namespace tvm

#endif  // WEBBUILD_SUPPORT_BASE64_H_
