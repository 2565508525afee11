#include "dtrn/runtime/check.h"

namespace dtrn {

void throw_check_failure(const char* file, int line, const char* condition, const std::string& message,
                         bool internal) {
  std::string text = internal ? "internal error: " : "";
  text += message.empty() ? std::string("check failed: ") + condition : message;
  text += str_cat(" [", file, ":", line, internal ? std::string(", ") + condition : std::string(), "]");
  throw Error(text);
}

}  // namespace dtrn
