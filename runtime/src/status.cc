#include "dtrn/runtime/status.h"

namespace dtrn {

std::string Status::ToString() const {
  const char* name = "ok";
  switch (code_) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kInvalidArgument: name = "invalid argument"; break;
    case StatusCode::kNotFound: name = "not found"; break;
    case StatusCode::kIoError: name = "I/O error"; break;
    case StatusCode::kDataLoss: name = "data loss"; break;
    case StatusCode::kFailedPrecondition: name = "failed precondition"; break;
    case StatusCode::kInternal: name = "internal"; break;
    case StatusCode::kCancelled: name = "cancelled"; break;
    case StatusCode::kPermissionDenied: name = "permission denied"; break;
  }
  return std::string(name) + ": " + message_;
}

}  // namespace dtrn
