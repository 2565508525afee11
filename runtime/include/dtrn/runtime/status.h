// Status and StatusOr: error values for boundaries that must not throw (config parsing, checkpoint and
// data I/O, RPC handlers). A Status is either ok or carries a code and one human-readable line naming
// what is wrong ("data/shard_0003.bin: bad magic"). Cheap to copy; thread-compatible.
#pragma once

#include <optional>
#include <string>
#include <utility>

#include "dtrn/runtime/check.h"

namespace dtrn {

enum class StatusCode { kOk, kInvalidArgument, kNotFound, kIoError, kDataLoss, kFailedPrecondition,
                        kInternal, kCancelled, kPermissionDenied };

class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
  static Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status IoError(std::string m) { return {StatusCode::kIoError, std::move(m)}; }
  static Status DataLoss(std::string m) { return {StatusCode::kDataLoss, std::move(m)}; }
  static Status FailedPrecondition(std::string m) {
    return {StatusCode::kFailedPrecondition, std::move(m)};
  }
  static Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
  // Stopped on request (a signal) after saving what is needed to continue.
  static Status Cancelled(std::string m) { return {StatusCode::kCancelled, std::move(m)}; }
  // The caller is known but may not do this (a worker reporting for a rank it was not given).
  static Status PermissionDenied(std::string m) { return {StatusCode::kPermissionDenied, std::move(m)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "ok", or "<code name>: <message>".
  std::string ToString() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// A value or the Status saying why there is none.
template <typename T>
class StatusOr {
 public:
  StatusOr(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    DTRN_ASSERT(!status_.ok(), "StatusOr built from an ok Status without a value");
  }
  StatusOr(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() & {
    DTRN_CHECK(ok(), "value() of a failed StatusOr: ", status_.message());
    return *value_;
  }
  const T& value() const& {
    DTRN_CHECK(ok(), "value() of a failed StatusOr: ", status_.message());
    return *value_;
  }
  T&& value() && {
    DTRN_CHECK(ok(), "value() of a failed StatusOr: ", status_.message());
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  T& operator*() { return value(); }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace dtrn

// Returns from the enclosing function when `expr` (a Status) is not ok.
#define DTRN_RETURN_IF_ERROR(expr)             \
  do {                                         \
    ::dtrn::Status dtrn_status_ = (expr);      \
    if (!dtrn_status_.ok()) return dtrn_status_; \
  } while (0)
