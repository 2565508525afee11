// SHA-256 blocks with the x86 SHA extensions. Intel's instructions keep the state as two vectors,
// ABEF and CDGH; each sha256rnds2 does two rounds, and sha256msg1/msg2 extend the message schedule
// four words at a time. The functions carry their own target attribute, so the file builds with the
// default flags and the caller checks the CPU first.
#include "sha256_blocks.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>

namespace dtrn::sha256_detail {

bool cpu_has_sha_extensions() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  const bool ssse3 = c & (1u << 9), sse41 = c & (1u << 19);
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool sha = b & (1u << 29);
  return ssse3 && sse41 && sha;
}

__attribute__((target("sha,ssse3,sse4.1"))) void compress_sha_extensions(uint32_t h[8],
                                                                         const uint8_t* blocks,
                                                                         size_t count) {
  // h[0..3] = A B C D and h[4..7] = E F G H, lane 0 first; the instructions want ABEF and CDGH,
  // with A in the highest lane.
  __m128i dcba = _mm_loadu_si128(reinterpret_cast<const __m128i*>(h));
  __m128i hgfe = _mm_loadu_si128(reinterpret_cast<const __m128i*>(h + 4));
  const __m128i cdab = _mm_shuffle_epi32(dcba, 0xB1);
  const __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);
  __m128i abef = _mm_alignr_epi8(cdab, efgh, 8);
  __m128i cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);
  // Message words are big-endian: reverse the bytes of each 32-bit lane.
  const __m128i byte_swap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
  for (size_t n = 0; n < count; ++n, blocks += 64) {
    const __m128i abef_in = abef, cdgh_in = cdgh;
    __m128i w[4];  // w[g % 4] holds schedule words 4g .. 4g+3
    for (int g = 0; g < 16; ++g) {
      __m128i m;
      if (g < 4) {
        m = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blocks + 16 * g)),
                             byte_swap);
      } else {
        // W[i] = W[i-16] + s0(W[i-15]) + W[i-7] + s1(W[i-2]) for i = 4g .. 4g+3.
        m = _mm_sha256msg1_epu32(w[(g - 4) & 3], w[(g - 3) & 3]);
        m = _mm_add_epi32(m, _mm_alignr_epi8(w[(g - 1) & 3], w[(g - 2) & 3], 4));
        m = _mm_sha256msg2_epu32(m, w[(g - 1) & 3]);
      }
      w[g & 3] = m;
      const __m128i k = _mm_add_epi32(
          m, _mm_loadu_si128(reinterpret_cast<const __m128i*>(kRoundConstants + 4 * g)));
      cdgh =
          _mm_sha256rnds2_epu32(cdgh, abef, k);  // now the new ABEF; the old ABEF is the new CDGH
      abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(k, 0x0E));
    }
    abef = _mm_add_epi32(abef, abef_in);
    cdgh = _mm_add_epi32(cdgh, cdgh_in);
  }
  const __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
  const __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
  dcba = _mm_blend_epi16(feba, dchg, 0xF0);
  hgfe = _mm_alignr_epi8(dchg, feba, 8);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(h), dcba);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(h + 4), hgfe);
}

}  // namespace dtrn::sha256_detail

#else

namespace dtrn::sha256_detail {
bool cpu_has_sha_extensions() { return false; }
void compress_sha_extensions(uint32_t*, const uint8_t*, size_t) {}
}  // namespace dtrn::sha256_detail

#endif
