// Unit checks of webbuild's replacements for the TVM support headers (webbuild/compile/
// runtime_support): byte layout and round trips. Built with em++ and run in node by
// tests/test_wasm_runtime.py::test_runtime_support_headers.
#include <tvm/support/io.h>
#include <tvm/support/serializer.h>
#include <tvm/support/cuda/nvtx.h>
#include "support/arena.h"
#include "support/base64.h"
#include "support/bytes_io.h"
#include "support/ring_buffer.h"
#include "support/utils.h"
#include <builtin_fp16.h>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <string>
#include <unordered_map>
#include <vector>
using namespace tvm::support;
static int failures = 0;
#define CHECK(c) do { if (!(c)) { std::printf("FAIL line %d: %s\n", __LINE__, #c); ++failures; } } while (0)
enum class Kind : int { kA = 3, kB = 7 };
int main() {
  // serializer round trip + exact byte layout
  std::string buf;
  BytesOutStream out(&buf);
  std::vector<int64_t> shape{2, 3};
  std::unordered_map<std::string, std::vector<uint32_t>> m{{"k", {1, 2}}};
  DLDataType dt{kDLFloat, 16, 1};
  DLDevice dev{kDLWebGPU, 0};
  out.Write(uint64_t(0xDD5E40F096B4A13Full));
  out.Write(std::string("hi"));
  out.Write(shape);
  out.Write(m);
  out.Write(dt);
  out.Write(dev);
  out.Write(Kind::kB);
  out.WriteArray(shape.data(), 2);
  CHECK(buf.size() == 8 + (8 + 2) + (8 + 16) + (8 + (8 + 1) + (8 + 8)) + 4 + 8 + 4 + 16);
  CHECK(buf.compare(8, 10, std::string("\x02\0\0\0\0\0\0\0hi", 10)) == 0);
  BytesInStream in(buf);
  uint64_t magic; std::string s; std::vector<int64_t> shape2; decltype(m) m2; DLDataType dt2; DLDevice dev2; Kind k; int64_t arr[2];
  CHECK(in.Read(&magic) && magic == 0xDD5E40F096B4A13Full);
  CHECK(in.Read(&s) && s == "hi");
  CHECK(in.Read(&shape2) && shape2 == shape);
  CHECK(in.Read(&m2) && m2 == m);
  CHECK(in.Read(&dt2) && dt2.code == kDLFloat && dt2.bits == 16 && dt2.lanes == 1);
  CHECK(in.Read(&dev2) && dev2.device_type == kDLWebGPU && dev2.device_id == 0);
  CHECK(in.Read(&k) && k == Kind::kB);
  CHECK(in.ReadArray(arr, 2) && arr[0] == 2 && arr[1] == 3);
  CHECK(!in.Read(&magic));  // exhausted
  // base64: known vectors and round trip of every length
  const char* plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
  const char* coded[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
  for (int i = 0; i < 7; ++i) {
    std::string enc; BytesOutStream eo(&enc); Base64OutStream b(&eo);
    b.Write(plain[i], std::strlen(plain[i])); b.Finish();
    CHECK(enc == coded[i]);
    std::string padded = std::string("  \n") + coded[i];
    BytesInStream ei(padded); Base64InStream d(&ei); d.InitPosition();
    std::string dec(std::strlen(plain[i]) + 4, '\0');
    size_t n = d.Read(&dec[0], dec.size());
    CHECK(n == std::strlen(plain[i]) && dec.compare(0, n, plain[i]) == 0);
  }
  std::string bin; for (int i = 0; i < 1000; ++i) bin.push_back(char(i * 37 + 11));
  std::string enc; { BytesOutStream eo(&enc); Base64OutStream b(&eo); b.Write(bin.data(), 500); b.Write(bin.data() + 500, 500); b.Finish(); }
  { BytesInStream ei(enc); Base64InStream d(&ei); std::string dec(1000, '\0'); CHECK(d.Read(&dec[0], 1000) == 1000 && dec == bin); }
  // ring buffer: FIFO across wrap-around and growth, callbacks
  RingBuffer rb; std::string sent, got; unsigned seed = 1;
  for (int round = 0; round < 200; ++round) {
    seed = seed * 1103515245u + 12345u; size_t nw = seed % 700;
    std::string chunk; for (size_t i = 0; i < nw; ++i) chunk.push_back(char('a' + (sent.size() + i) % 26));
    if (round % 2) rb.Write(chunk.data(), chunk.size());
    else rb.WriteWithCallback([&](void* p, size_t cap) { size_t n = std::min(cap, chunk.size()); std::memcpy(p, chunk.data(), n); chunk.resize(n); return n; }, chunk.size());
    sent += chunk;
    seed = seed * 1103515245u + 12345u; size_t nr = std::min<size_t>(seed % 900, rb.bytes_available());
    if (round % 3) { std::string r(nr, '\0'); rb.Read(&r[0], nr); got += r; }
    else rb.ReadWithCallback([&](const void* p, size_t n) { got.append(static_cast<const char*>(p), n); return n; }, nr);
  }
  while (rb.bytes_available()) { char c; rb.Read(&c, 1); got.push_back(c); }
  CHECK(got == sent);
  // arena
  Arena arena;
  double* d = arena.allocate_<double>(3); d[0] = 1; d[2] = 3;
  char* big = arena.allocate_<char>(10000); big[9999] = 'x';
  CHECK(reinterpret_cast<uintptr_t>(arena.allocate_<int64_t>(1)) % alignof(int64_t) == 0);
  arena.RecycleAll();
  CHECK(arena.allocate_<int>(5) != nullptr);
  // utils, nvtx, fp16
  CHECK(StartsWith("RPCSessionTimeoutError: x", "RPCSessionTimeoutError: ") && !StartsWith("ab", "abc"));
  NVTXScopedRange range("x");
  uint16_t halves[] = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x0000, 0x8000, 0x7C00, 0x3555};
  float want[] = {1.0f, -2.0f, 65504.0f, 5.960464477539063e-08f, 0.0f, -0.0f, INFINITY, 0.333251953125f};
  for (int i = 0; i < 8; ++i) CHECK((__extendXfYf2__<uint16_t, uint16_t, 10, float, uint32_t, 23>(halves[i]) == want[i]));
  CHECK(std::isnan(__extendXfYf2__<uint16_t, uint16_t, 10, float, uint32_t, 23>(uint16_t(0x7E00))));
  std::printf(failures ? "FAILED %d\n" : "ALL OK\n", failures);
  return failures ? 1 : 0;
}
