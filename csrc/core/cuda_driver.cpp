#include "cuda_driver.hpp"

#include "thread_pool.hpp"

#include <dlfcn.h>

#include <map>
#include <mutex>

namespace pyloader {
namespace {

// The versioned name first: the plain one is the legacy ABI kept for old binaries.
void* resolve(void* library, const std::string& path, const char* versioned, const char* plain) {
  void* symbol = versioned ? ::dlsym(library, versioned) : nullptr;
  if (symbol == nullptr) symbol = ::dlsym(library, plain);
  if (symbol == nullptr) {
    throw CudaError("the CUDA driver " + path + " has no entry point " + (versioned ? versioned : plain));
  }
  return symbol;
}

template <typename Function>
void bind_symbol(Function& target, void* library, const std::string& path, const char* versioned, const char* plain) {
  target = reinterpret_cast<Function>(resolve(library, path, versioned, plain));
}

}  // namespace

std::shared_ptr<const CudaDriver> CudaDriver::load(const std::string& path) {
  static std::mutex mutex;
  static std::map<std::string, std::shared_ptr<const CudaDriver>> loaded;
  std::lock_guard<std::mutex> lock(mutex);
  auto found = loaded.find(path);
  if (found != loaded.end()) return found->second;
  void* library = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    const char* reason = ::dlerror();
    throw CudaError("cannot load the CUDA driver " + path + ": " + (reason ? reason : "unknown error"));
  }
  auto driver = std::make_shared<CudaDriver>();
  driver->path = path;
  bind_symbol(driver->init, library, path, nullptr, "cuInit");
  bind_symbol(driver->device_get, library, path, nullptr, "cuDeviceGet");
  bind_symbol(driver->device_get_count, library, path, nullptr, "cuDeviceGetCount");
  bind_symbol(driver->primary_ctx_retain, library, path, nullptr, "cuDevicePrimaryCtxRetain");
  bind_symbol(driver->primary_ctx_release, library, path, "cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease");
  bind_symbol(driver->ctx_get_current, library, path, nullptr, "cuCtxGetCurrent");
  bind_symbol(driver->ctx_set_current, library, path, nullptr, "cuCtxSetCurrent");
  bind_symbol(driver->stream_create, library, path, nullptr, "cuStreamCreate");
  bind_symbol(driver->stream_destroy, library, path, "cuStreamDestroy_v2", "cuStreamDestroy");
  bind_symbol(driver->stream_wait_event, library, path, nullptr, "cuStreamWaitEvent");
  bind_symbol(driver->stream_synchronize, library, path, nullptr, "cuStreamSynchronize");
  bind_symbol(driver->mem_alloc, library, path, "cuMemAlloc_v2", "cuMemAlloc");
  bind_symbol(driver->mem_free, library, path, "cuMemFree_v2", "cuMemFree");
  bind_symbol(driver->mem_host_alloc, library, path, nullptr, "cuMemHostAlloc");
  bind_symbol(driver->mem_free_host, library, path, nullptr, "cuMemFreeHost");
  bind_symbol(driver->memcpy_htod_async, library, path, "cuMemcpyHtoDAsync_v2", "cuMemcpyHtoDAsync");
  bind_symbol(driver->event_create, library, path, nullptr, "cuEventCreate");
  bind_symbol(driver->event_record, library, path, nullptr, "cuEventRecord");
  bind_symbol(driver->event_query, library, path, nullptr, "cuEventQuery");
  bind_symbol(driver->event_synchronize, library, path, nullptr, "cuEventSynchronize");
  bind_symbol(driver->event_destroy, library, path, "cuEventDestroy_v2", "cuEventDestroy");
  bind_symbol(driver->get_error_name, library, path, nullptr, "cuGetErrorName");
  bind_symbol(driver->get_error_string, library, path, nullptr, "cuGetErrorString");
  driver->check(driver->init(0), "cuInit");
  loaded.emplace(path, driver);
  return driver;
}

void CudaDriver::check(CuResult result, const char* call) const {
  if (result == kCudaSuccess) return;
  const char* name = nullptr;
  const char* message = nullptr;
  if (get_error_name == nullptr || get_error_name(result, &name) != kCudaSuccess) name = nullptr;
  if (get_error_string == nullptr || get_error_string(result, &message) != kCudaSuccess) message = nullptr;
  throw CudaError(std::string(call) + " failed: " + (name ? name : "CUDA error " + std::to_string(result)) +
                  (message ? std::string(": ") + message : std::string()));
}

PrimaryContext::PrimaryContext(std::shared_ptr<const CudaDriver> driver, int ordinal)
    : driver_(std::move(driver)), ordinal_(ordinal) {
  int count = 0;
  driver_->check(driver_->device_get_count(&count), "cuDeviceGetCount");
  if (ordinal < 0 || ordinal >= count) {
    throw CudaError("no CUDA device " + std::to_string(ordinal) + " (the driver sees " + std::to_string(count) + ")");
  }
  driver_->check(driver_->device_get(&device_, ordinal), "cuDeviceGet");
  driver_->check(driver_->primary_ctx_retain(&context_, device_), "cuDevicePrimaryCtxRetain");
}

PrimaryContext::~PrimaryContext() {
  if (!owner_.is_current()) return;
  (void)driver_->primary_ctx_release(device_);
}

PrimaryContext::Binding PrimaryContext::bind() const {
  if (!owner_.is_current()) throw CudaError("CUDA cannot be used in a process forked after it was initialised");
  CuContext current = nullptr;
  driver_->check(driver_->ctx_get_current(&current), "cuCtxGetCurrent");
  if (current == context_) return Binding(*driver_, current, false);
  driver_->check(driver_->ctx_set_current(context_), "cuCtxSetCurrent");
  // A gather thread keeps the context current: it runs only our work, and setting the
  // context twice per driver call would serialise every copy on the driver's lock.
  return Binding(*driver_, current, !ThreadPool::on_worker_thread());
}

}  // namespace pyloader
