#include "dtrn/runtime/check.h"

namespace dtrn {

void throw_check_failure(const char* file, int line, const char* condition, const std::string& message,
                         bool internal) {
  std::string text = internal ? "internal error: " : "";
  text += message.empty() ? std::string("check failed: ") + condition : message;
  // Where the check sits helps whoever fixes dtrn, not whoever fixes their call (Note [Two kinds of check]).
  if (internal) text += str_cat(" [", file, ":", line, ", ", condition, "]");
  throw Error(text);
}

}  // namespace dtrn
