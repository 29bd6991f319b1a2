// Cross-check of webbuild's replacements for the TVM support headers (webbuild/compile/
// runtime_support) against the pinned TVM: linked with the real web runtime objects (compiled with
// those headers), run in node, reading and writing the same bytes the host TVM wheel writes and
// reads. Driven by tests/test_wasm_runtime.py::test_runtime_support_matches_pinned_tvm.
//
// argv[1] is a folder holding what the host wrote:
//   host_params.bin  tvm.runtime.save_param_dict(...)            (runtime.LoadParams reads it)
//   host_exe.bin     a relax.VMExecutable's write_to_file(...)   (the VM loads it from bytes)
//   host_tensor.b64  the base64 "data" of tvm.ir.save_json(tensor)
// and receives what the web runtime makes of them:
//   wasm_params.bin      runtime.SaveParams of the loaded dict
//   wasm_params_raw.bin  each loaded tensor's data bytes, in the dict's sorted name order
//   wasm_exe.bin / wasm_exe.txt  the loaded executable written back / its as_text()
//   wasm_tensor.b64 / wasm_tensor_raw.bin  the tensor re-encoded / its data bytes
//   halves.bin      the float32 of every float16 bit pattern 0..65535 (__extendXfYf2__)
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>
#include <tvm/runtime/tensor.h>
#include "support/base64.h"
#include "support/bytes_io.h"
#include <builtin_fp16.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;
using tvm::support::Base64InStream;
using tvm::support::Base64OutStream;
using tvm::support::BytesInStream;
using tvm::support::BytesOutStream;

static std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

static void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary).write(data.data(), static_cast<std::streamsize>(data.size()));
}

static std::string TensorBytes(const DLTensor* t) {
  size_t n = (t->dtype.bits * t->dtype.lanes + 7) / 8;
  for (int i = 0; i < t->ndim; ++i) n *= static_cast<size_t>(t->shape[i]);
  return std::string(static_cast<const char*>(t->data) + t->byte_offset, n);
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::printf("usage: check.js <folder>\n");
    return 2;
  }
  const std::string dir = std::string(argv[1]) + "/";

  // Parameter dicts: the runtime's own LoadParams / SaveParams over our serializer and io.
  std::string host_params = ReadFile(dir + "host_params.bin");
  ffi::Map<ffi::String, tvm::runtime::Tensor> params =
      ffi::Function::GetGlobalRequired("runtime.LoadParams")(ffi::Bytes(host_params))
          .cast<ffi::Map<ffi::String, tvm::runtime::Tensor>>();
  ffi::Bytes saved = ffi::Function::GetGlobalRequired("runtime.SaveParams")(params).cast<ffi::Bytes>();
  WriteFile(dir + "wasm_params.bin", std::string(saved.data(), saved.size()));
  std::vector<std::string> names;
  for (const auto& kv : params) names.push_back(kv.first);
  std::sort(names.begin(), names.end());
  std::string raw;
  for (const auto& name : names) raw += TensorBytes(params[name].operator->());
  WriteFile(dir + "wasm_params_raw.bin", raw);

  // The VM executable, as the build embeds it in model.wasm.
  std::string host_exe = ReadFile(dir + "host_exe.bin");
  ffi::Module exe = ffi::Function::GetGlobalRequired("ffi.Module.load_from_bytes.relax.VMExecutable")(
                        ffi::Bytes(host_exe)).cast<ffi::Module>();
  WriteFile(dir + "wasm_exe.txt", exe->GetFunction("as_text").value()().cast<ffi::String>());
  exe->WriteToFile(dir + "wasm_exe.bin", "");

  // A tensor's JSON data: base64 over SaveDLTensor, as tensor.cc's __data_to_json__ does.
  std::string b64 = ReadFile(dir + "host_tensor.b64");
  BytesInStream in(b64);
  Base64InStream decoder(&in);
  decoder.InitPosition();
  tvm::runtime::Tensor tensor;
  if (!tensor.Load(&decoder)) {
    std::printf("FAIL: Tensor::Load over base64\n");
    return 1;
  }
  WriteFile(dir + "wasm_tensor_raw.bin", TensorBytes(tensor.operator->()));
  std::string encoded;
  BytesOutStream out(&encoded);
  Base64OutStream encoder(&out);
  tvm::runtime::SaveDLTensor(&encoder, tensor.operator->());
  encoder.Finish();
  WriteFile(dir + "wasm_tensor.b64", encoded);

  // float16 -> float32 for every bit pattern.
  std::string halves(65536 * sizeof(float), '\0');
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = __extendXfYf2__<uint16_t, uint16_t, 10, float, uint32_t, 23>(static_cast<uint16_t>(h));
    std::copy(reinterpret_cast<const char*>(&f), reinterpret_cast<const char*>(&f) + sizeof(float),
              &halves[h * sizeof(float)]);
  }
  WriteFile(dir + "halves.bin", halves);
  std::printf("DONE\n");
  return 0;
}
