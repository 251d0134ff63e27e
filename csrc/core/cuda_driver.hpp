// The CUDA driver API, loaded at run time.
//
// pyloader builds without the CUDA toolkit: the driver library (libcuda.so.1 by default)
// is opened with dlopen when device staging is first asked for, and the few entry points
// staging needs are resolved by name, taking the versioned `_v2` symbols where the
// driver has them (their signatures are the ones the CUDA headers map the plain names to).
// The driver's primary context of a device is the one torch's runtime uses, so memory,
// streams and events are shared with torch without any handle conversion.
//
// Contract:
//   * CudaDriver::load(path) returns one shared instance per path; the library stays
//     loaded for the life of the process (unloading a driver others use is unsafe).
//     Throws CudaError when the library or an entry point is missing.
//   * Every call is thread-safe as the driver is; check() turns a CUresult other than
//     success into a CudaError naming the call and the driver's message.
//   * PrimaryContext retains a device's primary context for its lifetime; bind() makes
//     it current on the calling thread for the life of the returned Binding, which then
//     restores the thread's previous context (a ThreadPool worker keeps it current:
//     such threads run only pyloader's work). Driver calls need a current context, and
//     the caller's thread (whose current context is torch's current device) must be
//     left as it was. In a forked child nothing is released: the child cannot use the
//     parent's CUDA state at all.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

#include "process_owner.hpp"

namespace pyloader {

class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Driver handle types, as opaque as the driver keeps them.
using CuResult = int;
using CuDevice = int;
using CuDevicePtr = unsigned long long;
using CuContext = struct CuContextOpaque*;
using CuStream = struct CuStreamOpaque*;
using CuEvent = struct CuEventOpaque*;

struct CudaDriver {
  static std::shared_ptr<const CudaDriver> load(const std::string& path);

  // Throws CudaError "<call> failed: <name>: <message>" unless `result` is success.
  void check(CuResult result, const char* call) const;

  CuResult (*init)(unsigned flags) = nullptr;
  CuResult (*device_get)(CuDevice* device, int ordinal) = nullptr;
  CuResult (*device_get_count)(int* count) = nullptr;
  CuResult (*primary_ctx_retain)(CuContext* context, CuDevice device) = nullptr;
  CuResult (*primary_ctx_release)(CuDevice device) = nullptr;
  CuResult (*ctx_get_current)(CuContext* context) = nullptr;
  CuResult (*ctx_set_current)(CuContext context) = nullptr;
  CuResult (*stream_create)(CuStream* stream, unsigned flags) = nullptr;
  CuResult (*stream_destroy)(CuStream stream) = nullptr;
  CuResult (*stream_wait_event)(CuStream stream, CuEvent event, unsigned flags) = nullptr;
  CuResult (*stream_synchronize)(CuStream stream) = nullptr;
  CuResult (*mem_alloc)(CuDevicePtr* pointer, std::size_t bytes) = nullptr;
  CuResult (*mem_free)(CuDevicePtr pointer) = nullptr;
  CuResult (*mem_host_alloc)(void** pointer, std::size_t bytes, unsigned flags) = nullptr;
  CuResult (*mem_free_host)(void* pointer) = nullptr;
  CuResult (*memcpy_htod_async)(CuDevicePtr destination, const void* source, std::size_t bytes,
                                CuStream stream) = nullptr;
  CuResult (*event_create)(CuEvent* event, unsigned flags) = nullptr;
  CuResult (*event_record)(CuEvent event, CuStream stream) = nullptr;
  CuResult (*event_query)(CuEvent event) = nullptr;
  CuResult (*event_synchronize)(CuEvent event) = nullptr;
  CuResult (*event_destroy)(CuEvent event) = nullptr;
  CuResult (*get_error_name)(CuResult result, const char** name) = nullptr;
  CuResult (*get_error_string)(CuResult result, const char** message) = nullptr;

  std::string path;
};

// CUresult values staging tells apart.
constexpr CuResult kCudaSuccess = 0;
constexpr CuResult kCudaErrorOutOfMemory = 2;
constexpr CuResult kCudaErrorNotReady = 600;
// cuStreamCreate / cuEventCreate flags.
constexpr unsigned kCudaStreamNonBlocking = 1;
constexpr unsigned kCudaEventBlockingSync = 1;  // a host waiting on it sleeps instead of spinning
constexpr unsigned kCudaEventDisableTiming = 2;

class PrimaryContext {
 public:
  PrimaryContext(std::shared_ptr<const CudaDriver> driver, int ordinal);
  ~PrimaryContext();
  PrimaryContext(const PrimaryContext&) = delete;
  PrimaryContext& operator=(const PrimaryContext&) = delete;

  // The context current on this thread until the Binding dies (no driver call when it
  // already is). Throws CudaError in a forked child.
  class Binding {
   public:
    Binding(const CudaDriver& driver, CuContext previous, bool restore) noexcept
        : driver_(driver), previous_(previous), restore_(restore) {}
    ~Binding() {
      if (restore_) (void)driver_.ctx_set_current(previous_);
    }
    Binding(const Binding&) = delete;
    Binding& operator=(const Binding&) = delete;

   private:
    const CudaDriver& driver_;
    CuContext previous_;
    bool restore_;
  };
  [[nodiscard]] Binding bind() const;
  const CudaDriver& driver() const noexcept { return *driver_; }
  int ordinal() const noexcept { return ordinal_; }
  bool in_owner_process() const noexcept { return owner_.is_current(); }

 private:
  std::shared_ptr<const CudaDriver> driver_;
  int ordinal_;
  CuDevice device_ = 0;
  CuContext context_ = nullptr;
  ProcessOwner owner_;
};

}  // namespace pyloader
