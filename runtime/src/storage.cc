#include "dtrn/runtime/storage.h"

namespace dtrn {

Storage::Storage(size_t nbytes, Device device)
    : nbytes_(nbytes), device_(device), allocator_(&allocator_for(device)) {
  data_ = nbytes_ > 0 ? allocator_->allocate(nbytes_) : nullptr;
}

Storage::~Storage() {
  if (data_ != nullptr) allocator_->deallocate(data_, nbytes_);
}

}  // namespace dtrn
