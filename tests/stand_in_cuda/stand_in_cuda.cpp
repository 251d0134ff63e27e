// A stand-in for the CUDA driver library, for testing device staging without a GPU.
//
// "Device" memory is host memory: a device pointer is a host address. Each stream is a
// thread that runs its work in order, and every copy waits a random while first, so
// copies land well after cuMemcpyHtoDAsync returned and events complete late: a
// caller that reuses a source before its copy's event, or reads a destination before
// waiting for it, sees wrong bytes. Driver calls without a current context fail, as
// the real driver's do.
//
// Knobs (read by cuInit from the environment):
//   STAND_IN_CUDA_DEVICES       devices reported (default 1)
//   STAND_IN_CUDA_COPY_DELAY_US longest wait before a copy runs (default 300)
//   STAND_IN_CUDA_FAIL_COPY     the n-th copy (1-based) fails when issued (default never)
// stand_in_configure(delay_us, fail_after) changes them at run time: copies wait up to
// delay_us, and the fail_after-th copy from now fails (0: none).
// Counters for tests: stand_in_copies(), stand_in_bytes_copied(), stand_in_retained_contexts(),
// stand_in_live_events(), stand_in_calls_without_context(), stand_in_allocations(),
// stand_in_live_allocations(); stand_in_fail_pinning(1) makes cuMemHostAlloc fail;
// stand_in_host_waits(0) makes the legacy stream asynchronous (stand_in_synchronize()
// then waits for it); stand_in_fail_record(n) makes the n-th cuEventRecord from now
// fail. Also counted: stand_in_streams_created(), stand_in_pending_copies() (queued,
// not yet run), stand_in_spinning_events() (created without CU_EVENT_BLOCKING_SYNC).
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

namespace {

using Result = int;
constexpr Result kSuccess = 0;
constexpr Result kInvalidValue = 1;
constexpr Result kInvalidDevice = 101;
constexpr Result kOutOfMemory = 2;
constexpr Result kInvalidContext = 201;
constexpr Result kNotReady = 600;

int devices = 1;
int copy_delay_us = 300;
long fail_copy = -1;
std::atomic<long> copies{0};
std::atomic<long long> bytes_copied{0};
std::atomic<int> retained{0};
std::atomic<int> live_events{0};
std::atomic<int> calls_without_context{0};
std::atomic<long> allocations{0};       // device and pinned blocks allocated so far
std::atomic<long> live_allocations{0};  // not yet freed
std::atomic<bool> fail_pinning{false};
// Whether work on the legacy stream (handle 0) is the host's: a wait queued there
// blocks the caller, and an event recorded there is complete at once, as if the
// consumer ran on the host. Off, the legacy
// stream is a stream like the others, and stand_in_synchronize() drains it.
std::atomic<bool> host_waits{true};
std::atomic<long> streams_created{0};
std::atomic<long> pending_copies{0};   // queued and not yet run
std::atomic<long> spinning_events{0};  // created without CU_EVENT_BLOCKING_SYNC
std::atomic<long> records{0};
std::atomic<long> stream_syncs{0};  // cuStreamSynchronize calls
long fail_record = -1;
constexpr unsigned kEventBlockingSync = 1;
int contexts[16];  // the primary contexts' identities
thread_local void* current_context = nullptr;

Result needs_context() {
  if (current_context != nullptr) return kSuccess;
  ++calls_without_context;
  return kInvalidContext;
}

struct Event {
  std::mutex mutex;
  std::condition_variable changed;
  long recorded = 0;   // records issued
  long completed = 0;  // records the stream has reached
};

// What a CUevent handle points to: work queued on streams holds the event itself, so
// destroying the handle early (as the driver allows) frees it only once that work ran.
struct EventHandle {
  std::shared_ptr<Event> event = std::make_shared<Event>();
};

std::shared_ptr<Event> event_of(void* handle) { return static_cast<EventHandle*>(handle)->event; }

struct Stream {
  std::mutex mutex;
  std::condition_variable work;
  std::deque<std::function<void()>> queue;
  bool stopping = false;
  std::thread runner;

  Stream() : runner([this] { run(); }) {}
  ~Stream() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      stopping = true;
    }
    work.notify_all();
    runner.join();
  }
  void push(std::function<void()> step) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      queue.push_back(std::move(step));
    }
    work.notify_all();
  }
  void run() {
    for (;;) {
      std::function<void()> step;
      {
        std::unique_lock<std::mutex> lock(mutex);
        work.wait(lock, [this] { return stopping || !queue.empty(); });
        if (queue.empty()) return;
        step = std::move(queue.front());
        queue.pop_front();
      }
      step();
    }
  }
};

Stream& legacy_stream() {
  static Stream* stream = new Stream();  // lives as long as the process
  return *stream;
}

Stream& stream_of(void* handle) { return handle ? *static_cast<Stream*>(handle) : legacy_stream(); }

// Blocks until everything queued on `stream` so far has run.
void drain(Stream& stream) {
  auto done = std::make_shared<Event>();
  stream.push([done] {
    {
      std::lock_guard<std::mutex> lock(done->mutex);
      done->completed = 1;
    }
    done->changed.notify_all();
  });
  std::unique_lock<std::mutex> lock(done->mutex);
  done->changed.wait(lock, [&] { return done->completed == 1; });
}

int random_delay_us() {
  static std::mutex mutex;
  static std::mt19937 generator(12345);
  std::lock_guard<std::mutex> lock(mutex);
  return copy_delay_us > 0 ? static_cast<int>(generator() % static_cast<unsigned>(copy_delay_us + 1)) : 0;
}

}  // namespace

extern "C" {

Result cuInit(unsigned) {
  if (const char* value = std::getenv("STAND_IN_CUDA_DEVICES")) devices = std::atoi(value);
  if (const char* value = std::getenv("STAND_IN_CUDA_COPY_DELAY_US")) copy_delay_us = std::atoi(value);
  if (const char* value = std::getenv("STAND_IN_CUDA_FAIL_COPY")) fail_copy = std::atol(value);
  return kSuccess;
}

Result cuDeviceGetCount(int* count) {
  *count = devices;
  return kSuccess;
}

Result cuDeviceGet(int* device, int ordinal) {
  if (ordinal < 0 || ordinal >= devices) return kInvalidDevice;
  *device = ordinal;
  return kSuccess;
}

Result cuDevicePrimaryCtxRetain(void** context, int device) {
  if (device < 0 || device >= devices || device >= 16) return kInvalidDevice;
  *context = &contexts[device];
  ++retained;
  return kSuccess;
}

Result cuDevicePrimaryCtxRelease_v2(int) {
  --retained;
  return kSuccess;
}

Result cuCtxGetCurrent(void** context) {
  *context = current_context;
  return kSuccess;
}

Result cuCtxSetCurrent(void* context) {
  current_context = context;
  return kSuccess;
}

Result cuStreamCreate(void** stream, unsigned) {
  if (Result r = needs_context()) return r;
  *stream = new Stream();
  ++streams_created;
  return kSuccess;
}

Result cuStreamDestroy_v2(void* stream) {
  if (Result r = needs_context()) return r;
  delete static_cast<Stream*>(stream);  // finishes its queued work first
  return kSuccess;
}

Result cuMemcpyHtoDAsync_v2(unsigned long long destination, const void* source, std::size_t bytes, void* stream) {
  if (Result r = needs_context()) return r;
  const long number = ++copies;
  if (number == fail_copy) return kInvalidValue;
  if (destination == 0 || source == nullptr) return kInvalidValue;
  const int delay = random_delay_us();
  ++pending_copies;
  stream_of(stream).push([=] {
    std::this_thread::sleep_for(std::chrono::microseconds(delay));
    std::memcpy(reinterpret_cast<void*>(destination), source, bytes);
    bytes_copied += static_cast<long long>(bytes);
    --pending_copies;
  });
  return kSuccess;
}

Result cuStreamSynchronize(void* handle) {
  if (Result r = needs_context()) return r;
  ++stream_syncs;
  drain(stream_of(handle));
  return kSuccess;
}

// Device and pinned memory are host memory; allocations are counted, so tests can see
// that blocks are pooled rather than allocated per batch.
Result cuMemAlloc_v2(unsigned long long* pointer, std::size_t bytes) {
  if (Result r = needs_context()) return r;
  void* memory = std::malloc(bytes == 0 ? 1 : bytes);
  if (memory == nullptr) return kOutOfMemory;
  std::memset(memory, 0xAB, bytes);  // garbage until a copy lands
  *pointer = reinterpret_cast<unsigned long long>(memory);
  ++allocations;
  ++live_allocations;
  return kSuccess;
}

Result cuMemFree_v2(unsigned long long pointer) {
  if (Result r = needs_context()) return r;
  std::free(reinterpret_cast<void*>(pointer));
  --live_allocations;
  return kSuccess;
}

Result cuMemHostAlloc(void** pointer, std::size_t bytes, unsigned) {
  if (Result r = needs_context()) return r;
  if (fail_pinning) return kOutOfMemory;
  *pointer = std::malloc(bytes == 0 ? 1 : bytes);
  if (*pointer == nullptr) return kOutOfMemory;
  ++allocations;
  ++live_allocations;
  return kSuccess;
}

Result cuMemFreeHost(void* pointer) {
  if (Result r = needs_context()) return r;
  std::free(pointer);
  --live_allocations;
  return kSuccess;
}

Result cuEventCreate(void** event, unsigned flags) {
  if (Result r = needs_context()) return r;
  *event = new EventHandle();
  ++live_events;
  if ((flags & kEventBlockingSync) == 0) ++spinning_events;
  return kSuccess;
}

Result cuEventDestroy_v2(void* event) {
  if (Result r = needs_context()) return r;
  --live_events;
  delete static_cast<EventHandle*>(event);
  return kSuccess;
}

Result cuEventRecord(void* handle, void* stream) {
  if (Result r = needs_context()) return r;
  if (++records == fail_record) return kInvalidValue;
  std::shared_ptr<Event> event = event_of(handle);
  long number;
  {
    std::lock_guard<std::mutex> lock(event->mutex);
    number = ++event->recorded;
    if (stream == nullptr && host_waits) {  // the host's work so far is done
      event->completed = number;
      return kSuccess;
    }
  }
  stream_of(stream).push([event, number] {
    {
      std::lock_guard<std::mutex> lock(event->mutex);
      if (event->completed < number) event->completed = number;
    }
    event->changed.notify_all();
  });
  return kSuccess;
}

Result cuEventQuery(void* handle) {
  if (Result r = needs_context()) return r;
  std::shared_ptr<Event> event = event_of(handle);
  std::lock_guard<std::mutex> lock(event->mutex);
  return event->completed >= event->recorded ? kSuccess : kNotReady;
}

Result cuEventSynchronize(void* handle) {
  if (Result r = needs_context()) return r;
  std::shared_ptr<Event> event = event_of(handle);
  std::unique_lock<std::mutex> lock(event->mutex);
  const long target = event->recorded;
  event->changed.wait(lock, [&] { return event->completed >= target; });
  return kSuccess;
}

Result cuStreamWaitEvent(void* stream, void* handle, unsigned) {
  if (Result r = needs_context()) return r;
  std::shared_ptr<Event> event = event_of(handle);
  long target;
  {
    std::lock_guard<std::mutex> lock(event->mutex);
    target = event->recorded;
  }
  auto wait = [event, target] {
    std::unique_lock<std::mutex> lock(event->mutex);
    event->changed.wait(lock, [&] { return event->completed >= target; });
  };
  if (stream == nullptr && host_waits) {
    wait();  // the legacy stream stands for the host, which reads batches right away
  } else {
    stream_of(stream).push(wait);
  }
  return kSuccess;
}

Result cuGetErrorName(Result result, const char** name) {
  switch (result) {
    case kInvalidValue: *name = "CUDA_ERROR_INVALID_VALUE"; return kSuccess;
    case kOutOfMemory: *name = "CUDA_ERROR_OUT_OF_MEMORY"; return kSuccess;
    case kInvalidDevice: *name = "CUDA_ERROR_INVALID_DEVICE"; return kSuccess;
    case kInvalidContext: *name = "CUDA_ERROR_INVALID_CONTEXT"; return kSuccess;
    case kNotReady: *name = "CUDA_ERROR_NOT_READY"; return kSuccess;
    default: return kInvalidValue;
  }
}

Result cuGetErrorString(Result result, const char** message) {
  const char* name = nullptr;
  if (cuGetErrorName(result, &name) != kSuccess) return kInvalidValue;
  *message = "reported by the stand-in driver";
  return kSuccess;
}

void stand_in_configure(int delay_us, long fail_after) {
  copy_delay_us = delay_us;
  fail_copy = fail_after > 0 ? copies.load() + fail_after : -1;
}

long stand_in_copies() { return copies.load(); }
long long stand_in_bytes_copied() { return bytes_copied.load(); }
int stand_in_retained_contexts() { return retained.load(); }
int stand_in_live_events() { return live_events.load(); }
int stand_in_calls_without_context() { return calls_without_context.load(); }
long stand_in_allocations() { return allocations.load(); }
long stand_in_live_allocations() { return live_allocations.load(); }
void stand_in_fail_pinning(int fail) { fail_pinning = fail != 0; }
void stand_in_host_waits(int waits) { host_waits = waits != 0; }
long stand_in_streams_created() { return streams_created.load(); }
long stand_in_pending_copies() { return pending_copies.load(); }
long stand_in_stream_syncs() { return stream_syncs.load(); }
long stand_in_spinning_events() { return spinning_events.load(); }
void stand_in_fail_record(long after) { fail_record = after > 0 ? records.load() + after : -1; }
void stand_in_synchronize() { drain(legacy_stream()); }  // the host waits for the legacy stream

}  // extern "C"
