#include "dtrn/runtime/device.h"

#include <cstdlib>

#include "backend.h"
#include "dtrn/runtime/check.h"

namespace dtrn {

std::string Device::str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }

Device Device::parse(const std::string& text) {
  if (text == "cpu") return cpu();
  if (text == "cuda") return cuda(0);
  if (text.rfind("cuda:", 0) == 0) {
    char* end = nullptr;
    long i = std::strtol(text.c_str() + 5, &end, 10);
    if (end != text.c_str() + 5 && *end == '\0' && i >= 0) return cuda(static_cast<int>(i));
  }
  DTRN_CHECK(false, "unknown device '", text, "' (expected cpu, cuda or cuda:N)");
  return cpu();
}

std::ostream& operator<<(std::ostream& os, const Device& d) { return os << d.str(); }

}  // namespace dtrn
