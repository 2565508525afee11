// The SHA-256 compression function over whole 64-byte blocks, in two forms: portable C++ and the
// x86 SHA extensions (SHA-NI: about eight times faster, which matters when a checkpoint hashes
// gigabytes). sha256.cc picks one per Sha256 object.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dtrn::sha256_detail {

extern const uint32_t kRoundConstants[64];

void compress_portable(uint32_t h[8], const uint8_t* blocks, size_t count);
// Whether this CPU has the SHA extensions (and the SSSE3 / SSE4.1 shuffles the code uses).
bool cpu_has_sha_extensions();
// Only where cpu_has_sha_extensions(); elsewhere (or on another architecture) it must not be
// called.
void compress_sha_extensions(uint32_t h[8], const uint8_t* blocks, size_t count);

}  // namespace dtrn::sha256_detail
