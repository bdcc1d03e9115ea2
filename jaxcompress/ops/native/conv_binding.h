// The XLA FFI signature shared by the 2-D convolution kernels (conv_weight_grad.cc,
// depthwise_conv.cc): the intra-op thread pool, two float32 operands (input, and kernel or
// cotangent), one float32 result, and the window geometry as attributes.
#ifndef JAXCOMPRESS_OPS_NATIVE_CONV_BINDING_H_
#define JAXCOMPRESS_OPS_NATIVE_CONV_BINDING_H_

#include <cstdint>

#include "xla/ffi/api/ffi.h"

namespace jaxcompress {

inline auto ConvGeometryBinding() {
  namespace ffi = xla::ffi;
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>()
      .Attr<int64_t>("stride_h")
      .Attr<int64_t>("stride_w")
      .Attr<int64_t>("dilation_h")
      .Attr<int64_t>("dilation_w")
      .Attr<int64_t>("pad_top")
      .Attr<int64_t>("pad_left");
}

}  // namespace jaxcompress

#endif  // JAXCOMPRESS_OPS_NATIVE_CONV_BINDING_H_
