// webbuild replacement for TVM's src/support/utils.h: the string helpers the
// web runtime sources use.
#ifndef WEBBUILD_SUPPORT_UTILS_H_
#define WEBBUILD_SUPPORT_UTILS_H_

#include <string>

namespace tvm {
namespace support {

inline bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

inline bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace support
}  // namespace tvm

#endif  // WEBBUILD_SUPPORT_UTILS_H_
