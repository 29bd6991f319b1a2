// webbuild replacement for <tvm/support/cuda/nvtx.h>: NVTX profiling ranges are a
// CUDA-only feature, so in the web runtime a range is an empty object.
#ifndef WEBBUILD_TVM_SUPPORT_CUDA_NVTX_H_
#define WEBBUILD_TVM_SUPPORT_CUDA_NVTX_H_

#include <string>

namespace tvm {
namespace support {

class NVTXScopedRange {
 public:
  explicit NVTXScopedRange(const char*) {}
  explicit NVTXScopedRange(const std::string&) {}
  NVTXScopedRange(const NVTXScopedRange&) = delete;
  NVTXScopedRange& operator=(const NVTXScopedRange&) = delete;
};

}  // namespace support
}  // namespace tvm

#endif  // WEBBUILD_TVM_SUPPORT_CUDA_NVTX_H_
