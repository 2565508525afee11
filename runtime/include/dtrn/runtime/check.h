// Always-on checks for the runtime.
//
// Two macros with different meanings (see Note [Two kinds of check]):
//   DTRN_CHECK(cond, msg...)   a caller broke a contract: bad argument, mismatched shapes, wrong dtype.
//   DTRN_ASSERT(cond, msg...)  dtrn itself is broken: an internal invariant does not hold.
// Both throw dtrn::Error carrying the streamed message (or the failed condition when there is none) and
// are never compiled out; only DTRN_ASSERT adds file:line and the condition, since a user-facing error
// should not read like dtrn's source. DTRN_CHECK_EQ and friends also print both values.
//
// Note [Two kinds of check]
// A user reading "matmul: inner dimensions differ: [2, 3] vs [4, 5]" should fix their call; a user reading
// "internal error" should file a bug. Keeping the two apart keeps messages honest. Boundaries that must not
// throw (config, checkpoint and data I/O, RPC handlers) catch dtrn::Error and return a Status instead.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace dtrn {

// The one exception type the runtime throws.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Concatenates any streamable values into one string.
template <typename... Args>
std::string str_cat(Args&&... args) {
  std::ostringstream os;
  if constexpr (sizeof...(Args) > 0) (os << ... << std::forward<Args>(args));
  return os.str();
}

[[noreturn]] void throw_check_failure(const char* file, int line, const char* condition,
                                      const std::string& message, bool internal);

}  // namespace dtrn

#define DTRN_CHECK(cond, ...)                                                                  \
  do {                                                                                         \
    if (!(cond)) [[unlikely]]                                                                  \
      ::dtrn::throw_check_failure(__FILE__, __LINE__, #cond, ::dtrn::str_cat(__VA_ARGS__), false); \
  } while (0)

#define DTRN_ASSERT(cond, ...)                                                                \
  do {                                                                                        \
    if (!(cond)) [[unlikely]]                                                                 \
      ::dtrn::throw_check_failure(__FILE__, __LINE__, #cond, ::dtrn::str_cat(__VA_ARGS__), true); \
  } while (0)

#define DTRN_CHECK_OP_(a, b, op)                                                                \
  do {                                                                                          \
    const auto& dtrn_a_ = (a);                                                                  \
    const auto& dtrn_b_ = (b);                                                                  \
    if (!(dtrn_a_ op dtrn_b_)) [[unlikely]]                                                     \
      ::dtrn::throw_check_failure(__FILE__, __LINE__, #a " " #op " " #b,                        \
                                  ::dtrn::str_cat("check failed: " #a " " #op " " #b " (", dtrn_a_, \
                                                  " vs ", dtrn_b_, ")"),                        \
                                  false);                                                       \
  } while (0)

#define DTRN_CHECK_EQ(a, b) DTRN_CHECK_OP_(a, b, ==)
#define DTRN_CHECK_NE(a, b) DTRN_CHECK_OP_(a, b, !=)
#define DTRN_CHECK_LT(a, b) DTRN_CHECK_OP_(a, b, <)
#define DTRN_CHECK_LE(a, b) DTRN_CHECK_OP_(a, b, <=)
#define DTRN_CHECK_GT(a, b) DTRN_CHECK_OP_(a, b, >)
#define DTRN_CHECK_GE(a, b) DTRN_CHECK_OP_(a, b, >=)
