// XLA:CPU custom call running 2-D convolutions and transposed convolutions (NHWC activations,
// HWIO kernels, float32) with oneDNN's primitives: forward, backward-data and backward-weights.
//
// One handler, `DjOnednnConv`, serves all six (attribute `kind` = 3 * transposed + pass). With
// src x [N, H, W, C], dst y [N, OH, OW, O] and kernel w [KH, KW, C, O]:
//   pass 0 (forward):          a = x,  b = w   [, bias [O]] -> y
//   pass 1 (backward data):    a = dy, b = w                -> dx
//   pass 2 (backward weights): a = x,  b = dy               -> dw [, d bias [O]]
// The convolution (kind 0-2) is `lax.conv_general_dilated` with strides (sh, sw) and explicit
// low/high paddings: y[i] = sum_t x[s i + t - pl] w[t]. The transposed convolution (kind 3-5,
// oneDNN's deconvolution) is its adjoint pattern: y[s i + t - pl] += x[i] w[t], i.e.
// `lax.conv_transpose` with the kernel flipped in space.
//
// Activations stay in XLA's row-major NHWC layout (oneDNN's `nhwc`, for which it has direct JIT
// kernels). Kernels are passed as HWIO and reordered to whatever layout the chosen
// implementation wants (`format_tag::any`); they are small. The bias is added inside the forward
// primitive, and the backward-weights pass sums the bias gradient while it reads dy. Primitives are
// built once per geometry and cached. Executions are serialized with one mutex: each uses
// oneDNN's own OpenMP threads, so two at once would only oversubscribe the cores.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_map>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;

namespace {

struct Geometry {
  int64_t kind, n, h, w, c, o, kh, kw, oh, ow, sh, sw, plh, plw, phh, phw, bias;
  auto key() const {
    return std::make_tuple(kind, n, h, w, c, o, kh, kw, oh, ow, sh, sw, plh, plw, phh, phw, bias);
  }
  int64_t pass() const { return kind % 3; }
};

struct Plan {
  // The primitive and the weights layout it was built for.
  dnnl::primitive prim;
  memory::desc weights_md;  // the primitive's (possibly blocked) weights layout
  bool reorder_weights = false;
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

std::mutex& Lock() {
  static std::mutex mutex;
  return mutex;
}

std::map<decltype(Geometry{}.key()), std::unique_ptr<Plan>>& Cache() {
  static std::map<decltype(Geometry{}.key()), std::unique_ptr<Plan>> cache;
  return cache;
}

memory::desc Activations(int64_t n, int64_t h, int64_t w, int64_t c) {
  return memory::desc({n, c, h, w}, memory::data_type::f32, tag::nhwc);
}

memory::desc Kernel(const Geometry& g, tag layout) {
  return memory::desc({g.o, g.c, g.kh, g.kw}, memory::data_type::f32, layout);
}

// A zero descriptor is oneDNN's "no bias".
memory::desc Bias(const Geometry& g) {
  return g.bias ? memory::desc({g.o}, memory::data_type::f32, tag::a) : memory::desc();
}

// The three primitives of one family: convolution or deconvolution (same constructor shapes).
template <typename Forward, typename BackwardData, typename BackwardWeights>
std::unique_ptr<Plan> MakePlanOf(const Geometry& g, dnnl::algorithm algorithm) {
  auto plan = std::make_unique<Plan>();
  const memory::desc src = Activations(g.n, g.h, g.w, g.c), dst = Activations(g.n, g.oh, g.ow, g.o);
  const memory::dims strides{g.sh, g.sw}, low{g.plh, g.plw}, high{g.phh, g.phw};
  typename Forward::primitive_desc forward(Engine(), dnnl::prop_kind::forward_training, algorithm,
                                           src, Kernel(g, tag::any), Bias(g), dst, strides, low,
                                           high);
  if (g.pass() == 0) {
    plan->prim = Forward(forward);
    plan->weights_md = forward.weights_desc();
  } else if (g.pass() == 1) {
    typename BackwardData::primitive_desc pd(Engine(), algorithm, src, Kernel(g, tag::any), dst,
                                             strides, low, high, forward);
    plan->prim = BackwardData(pd);
    plan->weights_md = pd.weights_desc();
  } else {
    typename BackwardWeights::primitive_desc pd(Engine(), algorithm, src, Kernel(g, tag::any),
                                                Bias(g), dst, strides, low, high, forward);
    plan->prim = BackwardWeights(pd);
    plan->weights_md = pd.diff_weights_desc();
  }
  plan->reorder_weights = plan->weights_md != Kernel(g, tag::hwio);
  return plan;
}

std::unique_ptr<Plan> MakePlan(const Geometry& g) {
  if (g.kind < 3) {
    return MakePlanOf<dnnl::convolution_forward, dnnl::convolution_backward_data,
                      dnnl::convolution_backward_weights>(g, dnnl::algorithm::convolution_direct);
  }
  return MakePlanOf<dnnl::deconvolution_forward, dnnl::deconvolution_backward_data,
                    dnnl::deconvolution_backward_weights>(g, dnnl::algorithm::deconvolution_direct);
}

// a, b, result as in the header comment; bias is the forward pass's bias or null, result_bias
// the backward-weights pass's bias gradient or null.
ffi::Error Run(const Geometry& g, float* a, float* b, float* bias, float* result,
               float* result_bias) {
  std::lock_guard<std::mutex> guard(Lock());
  auto& slot = Cache()[g.key()];
  if (!slot) slot = MakePlan(g);
  Plan& plan = *slot;
  dnnl::engine& engine = Engine();
  dnnl::stream stream(engine);
  const memory::desc user_kernel = Kernel(g, tag::hwio);
  const memory::desc src = Activations(g.n, g.h, g.w, g.c), dst = Activations(g.n, g.oh, g.ow, g.o);
  if (g.pass() == 2) {
    memory dw_user(user_kernel, engine, result);
    memory dw = plan.reorder_weights ? memory(plan.weights_md, engine) : dw_user;
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, memory(src, engine, a)},
                                         {DNNL_ARG_DIFF_DST, memory(dst, engine, b)},
                                         {DNNL_ARG_DIFF_WEIGHTS, dw}};
    if (g.bias) args.insert({DNNL_ARG_DIFF_BIAS, memory(Bias(g), engine, result_bias)});
    plan.prim.execute(stream, args);
    if (plan.reorder_weights) dnnl::reorder(dw, dw_user).execute(stream, dw, dw_user);
  } else {
    memory w_user(user_kernel, engine, b);
    memory w = w_user;
    if (plan.reorder_weights) {
      w = memory(plan.weights_md, engine);
      dnnl::reorder(w_user, w).execute(stream, w_user, w);
    }
    if (g.pass() == 0) {
      std::unordered_map<int, memory> args{{DNNL_ARG_SRC, memory(src, engine, a)},
                                           {DNNL_ARG_WEIGHTS, w},
                                           {DNNL_ARG_DST, memory(dst, engine, result)}};
      if (g.bias) args.insert({DNNL_ARG_BIAS, memory(Bias(g), engine, bias)});
      plan.prim.execute(stream, args);
    } else {
      plan.prim.execute(stream, {{DNNL_ARG_DIFF_DST, memory(dst, engine, a)},
                                 {DNNL_ARG_WEIGHTS, w},
                                 {DNNL_ARG_DIFF_SRC, memory(src, engine, result)}});
    }
  }
  stream.wait();
  return ffi::Error::Success();
}

int64_t Elements(ffi::AnyBuffer::Dimensions dims) {
  int64_t count = 1;
  for (int64_t d : dims) count *= d;
  return count;
}

ffi::Error ConvImpl(ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                    std::optional<ffi::Buffer<ffi::F32>> bias, ffi::ResultBuffer<ffi::F32> result,
                    std::optional<ffi::ResultBuffer<ffi::F32>> result_bias, int64_t kind,
                    int64_t n, int64_t h, int64_t w, int64_t c, int64_t o, int64_t kh,
                    int64_t kw, int64_t oh, int64_t ow, int64_t sh, int64_t sw, int64_t plh,
                    int64_t plw, int64_t phh, int64_t phw) {
  if (kind < 0 || kind > 5) return ffi::Error::InvalidArgument("kind must be 0 to 5");
  const int64_t pass = kind % 3;
  const bool with_bias = bias.has_value() || result_bias.has_value();
  if ((bias.has_value() && pass != 0) || (result_bias.has_value() && pass != 2)) {
    return ffi::Error::InvalidArgument(
        "a bias is an input of the forward pass and an output of the backward-weights pass only");
  }
  Geometry g{kind, n, h, w, c, o, kh, kw, oh, ow, sh, sw, plh, plw, phh, phw, with_bias};
  const int64_t x_size = n * h * w * c, y_size = n * oh * ow * o, k_size = kh * kw * c * o;
  const int64_t want[3][3] = {{x_size, k_size, y_size}, {y_size, k_size, x_size},
                              {x_size, y_size, k_size}};
  if (Elements(a.dimensions()) != want[pass][0] || Elements(b.dimensions()) != want[pass][1] ||
      Elements(result->dimensions()) != want[pass][2] ||
      (bias.has_value() && Elements(bias->dimensions()) != o) ||
      (result_bias.has_value() && Elements((*result_bias)->dimensions()) != o)) {
    return ffi::Error::InvalidArgument("buffer sizes do not match the convolution geometry");
  }
  try {
    return Run(g, a.typed_data(), b.typed_data(), bias ? bias->typed_data() : nullptr,
               result->typed_data(), result_bias ? (*result_bias)->typed_data() : nullptr);
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN: ") + e.what());
  }
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(DjOnednnConv, ConvImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .OptionalArg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .OptionalRet<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("kind")
                                  .Attr<int64_t>("n")
                                  .Attr<int64_t>("h")
                                  .Attr<int64_t>("w")
                                  .Attr<int64_t>("c")
                                  .Attr<int64_t>("o")
                                  .Attr<int64_t>("kh")
                                  .Attr<int64_t>("kw")
                                  .Attr<int64_t>("oh")
                                  .Attr<int64_t>("ow")
                                  .Attr<int64_t>("sh")
                                  .Attr<int64_t>("sw")
                                  .Attr<int64_t>("plh")
                                  .Attr<int64_t>("plw")
                                  .Attr<int64_t>("phh")
                                  .Attr<int64_t>("phw"));
