// XLA:CPU custom call running 2-D convolutions (NHWC activations, HWIO kernels, float32) with
// oneDNN's convolution primitives: forward, backward-data and backward-weights.
//
// One handler, `DjOnednnConv`, serves all three (attribute `kind`):
//   kind 0 (forward):          a = x  [N, H, W, C],    b = w  [KH, KW, C, O] -> y  [N, OH, OW, O]
//   kind 1 (backward data):    a = dy [N, OH, OW, O],  b = w  [KH, KW, C, O] -> dx [N, H, W, C]
//   kind 2 (backward weights): a = x  [N, H, W, C],    b = dy [N, OH, OW, O] -> dw [KH, KW, C, O]
// with strides (sh, sw) and explicit low/high paddings, as `lax.conv_general_dilated`.
//
// Activations stay in XLA's row-major NHWC layout (oneDNN's `nhwc`, for which it has direct JIT
// kernels). Kernels are passed as HWIO and reordered to whatever layout the chosen
// implementation wants (`format_tag::any`); they are small. Primitives are built once per
// geometry and cached. Executions are serialized with one mutex: each uses oneDNN's own
// OpenMP threads, so two at once would only oversubscribe the cores.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;

namespace {

struct Geometry {
  int64_t kind, n, h, w, c, o, kh, kw, oh, ow, sh, sw, plh, plw, phh, phw;
  auto key() const {
    return std::make_tuple(kind, n, h, w, c, o, kh, kw, oh, ow, sh, sw, plh, plw, phh, phw);
  }
};

struct Plan {
  // The primitive and the memory descriptors it was built for.
  dnnl::primitive conv;
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

dnnl::convolution_forward::primitive_desc ForwardDesc(const Geometry& g) {
  return dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
      Activations(g.n, g.h, g.w, g.c), Kernel(g, tag::any), Activations(g.n, g.oh, g.ow, g.o),
      {g.sh, g.sw}, {g.plh, g.plw}, {g.phh, g.phw});
}

std::unique_ptr<Plan> MakePlan(const Geometry& g) {
  auto plan = std::make_unique<Plan>();
  auto forward = ForwardDesc(g);
  if (g.kind == 0) {
    plan->conv = dnnl::convolution_forward(forward);
    plan->weights_md = forward.weights_desc();
  } else if (g.kind == 1) {
    auto pd = dnnl::convolution_backward_data::primitive_desc(
        Engine(), dnnl::algorithm::convolution_direct, Activations(g.n, g.h, g.w, g.c),
        Kernel(g, tag::any), Activations(g.n, g.oh, g.ow, g.o), {g.sh, g.sw}, {g.plh, g.plw},
        {g.phh, g.phw}, forward);
    plan->conv = dnnl::convolution_backward_data(pd);
    plan->weights_md = pd.weights_desc();
  } else {
    auto pd = dnnl::convolution_backward_weights::primitive_desc(
        Engine(), dnnl::algorithm::convolution_direct, Activations(g.n, g.h, g.w, g.c),
        Kernel(g, tag::any), Activations(g.n, g.oh, g.ow, g.o), {g.sh, g.sw}, {g.plh, g.plw},
        {g.phh, g.phw}, forward);
    plan->conv = dnnl::convolution_backward_weights(pd);
    plan->weights_md = pd.diff_weights_desc();
  }
  plan->reorder_weights = plan->weights_md != Kernel(g, tag::hwio);
  return plan;
}

ffi::Error Run(const Geometry& g, float* a, float* b, float* result) {
  std::lock_guard<std::mutex> guard(Lock());
  auto& slot = Cache()[g.key()];
  if (!slot) slot = MakePlan(g);
  Plan& plan = *slot;
  dnnl::engine& engine = Engine();
  dnnl::stream stream(engine);
  memory::desc user_kernel = Kernel(g, tag::hwio);
  if (g.kind == 2) {  // a = x, b = dy, result = dw
    memory dw_user(user_kernel, engine, result);
    memory dw = plan.reorder_weights ? memory(plan.weights_md, engine) : dw_user;
    plan.conv.execute(stream, {{DNNL_ARG_SRC, memory(Activations(g.n, g.h, g.w, g.c), engine, a)},
                               {DNNL_ARG_DIFF_DST, memory(Activations(g.n, g.oh, g.ow, g.o), engine, b)},
                               {DNNL_ARG_DIFF_WEIGHTS, dw}});
    if (plan.reorder_weights) dnnl::reorder(dw, dw_user).execute(stream, dw, dw_user);
  } else {
    memory w_user(user_kernel, engine, b);
    memory w = w_user;
    if (plan.reorder_weights) {
      w = memory(plan.weights_md, engine);
      dnnl::reorder(w_user, w).execute(stream, w_user, w);
    }
    memory in = g.kind == 0 ? memory(Activations(g.n, g.h, g.w, g.c), engine, a)
                            : memory(Activations(g.n, g.oh, g.ow, g.o), engine, a);
    memory out = g.kind == 0 ? memory(Activations(g.n, g.oh, g.ow, g.o), engine, result)
                             : memory(Activations(g.n, g.h, g.w, g.c), engine, result);
    if (g.kind == 0) {
      plan.conv.execute(stream, {{DNNL_ARG_SRC, in}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, out}});
    } else {
      plan.conv.execute(stream,
                        {{DNNL_ARG_DIFF_DST, in}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DIFF_SRC, out}});
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
                    ffi::ResultBuffer<ffi::F32> result, int64_t kind, int64_t n, int64_t h,
                    int64_t w, int64_t c, int64_t o, int64_t kh, int64_t kw, int64_t oh,
                    int64_t ow, int64_t sh, int64_t sw, int64_t plh, int64_t plw, int64_t phh,
                    int64_t phw) {
  Geometry g{kind, n, h, w, c, o, kh, kw, oh, ow, sh, sw, plh, plw, phh, phw};
  const int64_t x_size = n * h * w * c, y_size = n * oh * ow * o, k_size = kh * kw * c * o;
  const int64_t want[3][3] = {{x_size, k_size, y_size}, {y_size, k_size, x_size},
                              {x_size, y_size, k_size}};
  if (kind < 0 || kind > 2) return ffi::Error::InvalidArgument("kind must be 0, 1 or 2");
  if (Elements(a.dimensions()) != want[kind][0] || Elements(b.dimensions()) != want[kind][1] ||
      Elements(result->dimensions()) != want[kind][2]) {
    return ffi::Error::InvalidArgument("buffer sizes do not match the convolution geometry");
  }
  try {
    return Run(g, a.typed_data(), b.typed_data(), result->typed_data());
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN: ") + e.what());
  }
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(DjOnednnConv, ConvImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
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
