// webbuild replacement for compiler-rt's builtin_fp16.h as used by TVM's sort kernels:
// __extendXfYf2__ widens one IEEE-754 binary format to a wider one (e.g. half -> float).
#ifndef WEBBUILD_BUILTIN_FP16_H_
#define WEBBUILD_BUILTIN_FP16_H_

#include <cstdint>
#include <cstring>

// SrcT/DstT: storage types; SrcRep/DstRep: unsigned integers of the same width;
// SrcSig/DstSig: number of explicit significand bits.
template <typename SrcT, typename SrcRep, int SrcSig, typename DstT, typename DstRep, int DstSig>
static inline DstT __extendXfYf2__(SrcT value) {
  static_assert(sizeof(SrcT) == sizeof(SrcRep) && sizeof(DstT) == sizeof(DstRep), "rep width");
  static_assert(DstSig >= SrcSig, "only widening conversions");
  constexpr int kSrcBits = static_cast<int>(sizeof(SrcRep) * 8);
  constexpr int kDstBits = static_cast<int>(sizeof(DstRep) * 8);
  constexpr int kSrcExpBits = kSrcBits - SrcSig - 1;
  constexpr int kDstExpBits = kDstBits - DstSig - 1;
  constexpr int kSrcBias = (1 << (kSrcExpBits - 1)) - 1;
  constexpr int kDstBias = (1 << (kDstExpBits - 1)) - 1;
  constexpr int kSrcExpMax = (1 << kSrcExpBits) - 1;
  constexpr int kDstExpMax = (1 << kDstExpBits) - 1;

  SrcRep bits;
  std::memcpy(&bits, &value, sizeof(bits));
  const DstRep sign = static_cast<DstRep>((bits >> (kSrcBits - 1)) & 1u) << (kDstBits - 1);
  int exp = static_cast<int>((bits >> SrcSig) & static_cast<SrcRep>(kSrcExpMax));
  DstRep mant = static_cast<DstRep>(bits & ((static_cast<SrcRep>(1) << SrcSig) - 1));

  DstRep out;
  if (exp == kSrcExpMax) {  // inf / nan (payload kept)
    out = (static_cast<DstRep>(kDstExpMax) << DstSig) | (mant << (DstSig - SrcSig));
  } else if (exp == 0) {
    if (mant == 0) {
      out = 0;
    } else {  // subnormal source: normalise
      int e = 1 - kSrcBias;
      while ((mant & (static_cast<DstRep>(1) << SrcSig)) == 0) {
        mant <<= 1;
        --e;
      }
      mant &= (static_cast<DstRep>(1) << SrcSig) - 1;
      out = (static_cast<DstRep>(e + kDstBias) << DstSig) | (mant << (DstSig - SrcSig));
    }
  } else {
    out = (static_cast<DstRep>(exp - kSrcBias + kDstBias) << DstSig) | (mant << (DstSig - SrcSig));
  }
  out |= sign;
  DstT result;
  std::memcpy(&result, &out, sizeof(result));
  return result;
}

#endif  // WEBBUILD_BUILTIN_FP16_H_
