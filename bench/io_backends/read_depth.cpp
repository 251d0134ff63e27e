// read_depth: small random reads from a cold file, preadv() on a thread pool versus io_uring.
//
// Question it answers: would io_uring beat the read engine's pool of threads doing one
// preadv() per run (csrc/core/file_reads.cpp) for the loader's typical reads: ~2 KiB or
// 4 KiB at random even offsets of a large file that is not in the page cache?
//
// Self-contained on purpose: no liburing (not installed, no registry for it in CI). The
// ring is driven with the raw io_uring_setup/io_uring_enter syscalls and the rings are
// mmap()ed as described in <linux/io_uring.h>.
//
// Backends (--backend):
//   pool    preadv() on threads. --mode stream: --threads threads (default = depth) pull
//           read indices from one atomic counter, so `depth` reads are always in flight.
//           --mode batch: what the engine does: a mutex/condvar task queue (notify_one per
//           task, like csrc/core/thread_pool.cpp), the caller submits `depth` reads and
//           waits on a condvar for all of them before the next batch.
//   uring   one ring of `depth` entries driven by this thread with IORING_OP_READ.
//           stream: `depth` reads kept in flight; batch: submit `depth`, wait for all.
//   sqpoll  as uring, with IORING_SETUP_SQPOLL (a kernel thread polls the submission queue).
//   uring-async  as uring, every SQE flagged IOSQE_ASYNC: the kernel hands each read to its
//           io-wq worker threads instead of trying it inline first (a kernel-side thread
//           pool; tells whether the inline submission path or the single thread limits).
//
// Every run reads the same offsets for the same --seed/--size/--reads (a fixed
// generator), so the backends see the same work; a checksum of the bytes read is printed
// so that equal configurations can be checked to have read the same data.
//
// Before each run the file is evicted from the page cache (fdatasync, then
// posix_fadvise(POSIX_FADV_DONTNEED) on the whole file: no root needed) and the pages
// still resident are counted with mincore() and printed, so a run that was not cold shows.
//
// CPU cost: getrusage(RUSAGE_SELF) user+sys over the run, per read. It includes the
// io_uring io-wq workers and the SQPOLL thread (they belong to this thread group), but not
// interrupt/softirq work charged to other tasks, so the machine-wide busy share from
// /proc/stat is printed too (it includes whatever else runs on the box).
//
// Output: one line of key=value pairs per run (easy to grep/awk), printed at the end of
// main(). threads= is the pool size asked for (io_uring runs on one thread whatever it
// says); max_threads= is how many threads the process really had (io-wq workers show there).
//
// Other modes: --create PATH --bytes N writes a file of pseudo-random bytes (faster than
// /dev/urandom); --resident PATH prints how many of its pages are cached; --probe tries to
// set up a plain and an SQPOLL ring and prints whether the kernel allowed it (errno if not).

#include <fcntl.h>
#include <linux/io_uring.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& what, int error = errno) {
  std::fprintf(stderr, "read_depth: %s: %s (errno %d)\n", what.c_str(), std::strerror(error), error);
  std::exit(2);
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

// splitmix64: fixed, fast and good enough to spread offsets and fill test files.
std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Offsets at any multiple of `align`: 2 by default, since token windows of uint16 tokens
// start at any token, so a read usually spans two pages, as the loader's reads do (a
// larger --align, e.g. 4096, tells what page-spanning costs). Fixed seed: same offsets
// every run.
std::vector<std::int64_t> make_offsets(std::int64_t file_bytes, std::size_t size, std::size_t count,
                                       std::uint64_t seed, std::int64_t align) {
  const auto positions = static_cast<std::uint64_t>((file_bytes - static_cast<std::int64_t>(size)) / align + 1);
  std::vector<std::int64_t> offsets(count);
  for (auto& offset : offsets) offset = static_cast<std::int64_t>(splitmix64(seed) % positions) * align;
  return offsets;
}

// Order-independent checksum of the bytes read (backends complete reads in any order).
std::uint64_t checksum(const unsigned char* data, std::size_t size, std::int64_t offset) {
  std::uint64_t sum = static_cast<std::uint64_t>(offset) * 0x9E3779B97F4A7C15ULL;
  for (std::size_t i = 0; i < size; ++i) sum = sum * 31 + data[i];
  return sum;
}

// --- page cache -------------------------------------------------------------------------

std::int64_t file_size(int fd) {
  struct stat status {};
  if (::fstat(fd, &status) != 0) die("fstat");
  return status.st_size;
}

// Pages of the file now in the page cache (mincore on a shared mapping of it).
std::size_t resident_pages(int fd) {
  const std::int64_t bytes = file_size(fd);
  if (bytes == 0) return 0;
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  void* map = ::mmap(nullptr, static_cast<std::size_t>(bytes), PROT_READ, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) die("mmap for mincore");
  std::vector<unsigned char> vec((static_cast<std::size_t>(bytes) + page - 1) / page);
  if (::mincore(map, static_cast<std::size_t>(bytes), vec.data()) != 0) die("mincore");
  ::munmap(map, static_cast<std::size_t>(bytes));
  std::size_t count = 0;
  for (unsigned char v : vec) count += v & 1;
  return count;
}

// Dirty pages cannot be dropped, hence the fdatasync first; DONTNEED then drops the clean
// ones (no root needed, unlike /proc/sys/vm/drop_caches, and it leaves other files alone).
void evict(int fd) {
  if (::fdatasync(fd) != 0) die("fdatasync");
  if (int error = ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED); error != 0) die("posix_fadvise(DONTNEED)", error);
}

// --- measurement --------------------------------------------------------------------------

struct CpuSample {
  double process_s = 0;          // user + sys of this process (all its threads)
  std::uint64_t machine_busy = 0;  // jiffies, all CPUs, not idle/iowait
  std::uint64_t machine_total = 0;
};

CpuSample cpu_sample() {
  CpuSample s;
  rusage usage {};
  ::getrusage(RUSAGE_SELF, &usage);
  s.process_s = usage.ru_utime.tv_sec + usage.ru_utime.tv_usec * 1e-6 + usage.ru_stime.tv_sec +
                usage.ru_stime.tv_usec * 1e-6;
  if (FILE* stat = std::fopen("/proc/stat", "r")) {
    unsigned long long v[10] = {};
    if (std::fscanf(stat, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                    &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]) >= 8) {
      for (int i = 0; i < 8; ++i) s.machine_total += v[i];  // guest time is inside user already
      s.machine_busy = s.machine_total - v[3] - v[4];        // minus idle and iowait
    }
    std::fclose(stat);
  }
  return s;
}

// Threads in this process now: shows io_uring punting reads to io-wq workers.
int thread_count() {
  FILE* status = std::fopen("/proc/self/status", "r");
  if (!status) return -1;
  char line[256];
  int threads = -1;
  while (std::fgets(line, sizeof line, status)) {
    if (std::sscanf(line, "Threads: %d", &threads) == 1) break;
  }
  std::fclose(status);
  return threads;
}

struct Result {
  std::uint64_t checksum = 0;
  std::vector<std::int64_t> latencies_ns;  // per read, issue to completion seen
  int max_threads = 0;
  std::size_t short_reads = 0;  // io_uring reads that came back short and were continued
};

// --- backend: preadv on threads ----------------------------------------------------------------

// One read, looping on short reads and EINTR like ReadEngine::read_run does.
void read_fully(int fd, unsigned char* buffer, std::size_t size, std::int64_t offset) {
  std::size_t done = 0;
  while (done < size) {
    iovec iov{buffer + done, size - done};
    const ssize_t got = ::preadv(fd, &iov, 1, offset + static_cast<std::int64_t>(done));
    if (got < 0) {
      if (errno == EINTR) continue;
      die("preadv at " + std::to_string(offset));
    }
    if (got == 0) die("preadv came back short (end of file) at " + std::to_string(offset), 0);
    done += static_cast<std::size_t>(got);
  }
}

// stream: `threads` threads pull indices from one atomic counter until all reads are done.
Result pool_stream(int fd, const std::vector<std::int64_t>& offsets, std::size_t size, std::size_t threads) {
  Result result;
  result.latencies_ns.resize(offsets.size());
  std::atomic<std::size_t> next{0};
  std::atomic<std::uint64_t> sum{0};
  std::vector<std::thread> workers;
  for (std::size_t t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      std::vector<unsigned char> buffer(size);
      std::uint64_t local = 0;
      for (std::size_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < offsets.size();) {
        const std::int64_t start = now_ns();
        read_fully(fd, buffer.data(), size, offsets[i]);
        result.latencies_ns[i] = now_ns() - start;
        local += checksum(buffer.data(), size, offsets[i]);
      }
      sum.fetch_add(local, std::memory_order_relaxed);
    });
  }
  result.max_threads = thread_count();
  for (auto& worker : workers) worker.join();
  result.checksum = sum.load();
  return result;
}

// batch: the engine's shape. A task queue like csrc/core/thread_pool.cpp (mutex, deque of
// std::function, notify_one per task); the caller submits one task per read of a batch of
// `batch` reads and waits on a condvar for the batch, then issues the next one.
Result pool_batch(int fd, const std::vector<std::int64_t>& offsets, std::size_t size, std::size_t threads,
                  std::size_t batch) {
  Result result;
  result.latencies_ns.resize(offsets.size());
  std::mutex mutex;
  std::condition_variable task_available;
  std::deque<std::function<void(unsigned char*)>> tasks;
  bool stopping = false;
  std::vector<std::thread> workers;
  for (std::size_t t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      std::vector<unsigned char> buffer(size);
      for (;;) {
        std::function<void(unsigned char*)> task;
        {
          std::unique_lock<std::mutex> lock(mutex);
          task_available.wait(lock, [&] { return stopping || !tasks.empty(); });
          if (stopping) return;
          task = std::move(tasks.front());
          tasks.pop_front();
        }
        task(buffer.data());
      }
    });
  }
  std::uint64_t sum = 0;
  std::mutex batch_mutex;
  std::condition_variable batch_done;
  for (std::size_t first = 0; first < offsets.size(); first += batch) {
    const std::size_t last = std::min(offsets.size(), first + batch);
    std::size_t left = last - first;
    const std::int64_t issued = now_ns();
    for (std::size_t i = first; i < last; ++i) {
      {
        std::lock_guard<std::mutex> lock(mutex);
        tasks.push_back([&, i, issued](unsigned char* buffer) {
          read_fully(fd, buffer, size, offsets[i]);
          const std::uint64_t c = checksum(buffer, size, offsets[i]);
          std::lock_guard<std::mutex> done_lock(batch_mutex);
          result.latencies_ns[i] = now_ns() - issued;  // includes queueing, as the caller sees it
          sum += c;
          if (--left == 0) batch_done.notify_all();
        });
      }
      task_available.notify_one();
    }
    std::unique_lock<std::mutex> lock(batch_mutex);
    batch_done.wait(lock, [&] { return left == 0; });
  }
  result.max_threads = thread_count();
  {
    std::lock_guard<std::mutex> lock(mutex);
    stopping = true;
  }
  task_available.notify_all();
  for (auto& worker : workers) worker.join();
  result.checksum = sum;
  return result;
}

// --- backend: io_uring via raw syscalls -------------------------------------------------------

int sys_io_uring_setup(unsigned entries, io_uring_params* params) {
  return static_cast<int>(::syscall(__NR_io_uring_setup, entries, params));
}

int sys_io_uring_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags) {
  return static_cast<int>(::syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, nullptr, 0));
}

// The minimum liburing does for us: set up, map both rings and the SQE array, push SQEs,
// submit/wait, walk CQEs. Head/tail indices shared with the kernel use acquire/release.
class Ring {
 public:
  // Returns errno in *error (and leaves the ring unusable) when setup is refused.
  Ring(unsigned entries, bool sqpoll, int* error) {
    io_uring_params params {};
    if (sqpoll) {
      params.flags |= IORING_SETUP_SQPOLL;
      params.sq_thread_idle = 1000;  // ms the poller spins before it sleeps and needs a wakeup
    }
    fd_ = sys_io_uring_setup(entries, &params);
    if (fd_ < 0) {
      *error = errno;
      return;
    }
    sqpoll_ = sqpoll;
    sq_bytes_ = params.sq_off.array + params.sq_entries * sizeof(unsigned);
    cq_bytes_ = params.cq_off.cqes + params.cq_entries * sizeof(io_uring_cqe);
    const bool single = params.features & IORING_FEAT_SINGLE_MMAP;
    if (single) sq_bytes_ = cq_bytes_ = std::max(sq_bytes_, cq_bytes_);
    sq_map_ = ::mmap(nullptr, sq_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_, IORING_OFF_SQ_RING);
    if (sq_map_ == MAP_FAILED) die("mmap SQ ring");
    cq_map_ = single ? sq_map_
                     : ::mmap(nullptr, cq_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_,
                              IORING_OFF_CQ_RING);
    if (cq_map_ == MAP_FAILED) die("mmap CQ ring");
    sqes_bytes_ = params.sq_entries * sizeof(io_uring_sqe);
    sqes_ = static_cast<io_uring_sqe*>(
        ::mmap(nullptr, sqes_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_, IORING_OFF_SQES));
    if (sqes_ == MAP_FAILED) die("mmap SQEs");
    auto* sq = static_cast<unsigned char*>(sq_map_);
    sq_head_ = reinterpret_cast<unsigned*>(sq + params.sq_off.head);
    sq_tail_ = reinterpret_cast<unsigned*>(sq + params.sq_off.tail);
    sq_mask_ = *reinterpret_cast<unsigned*>(sq + params.sq_off.ring_mask);
    sq_flags_ = reinterpret_cast<unsigned*>(sq + params.sq_off.flags);
    sq_array_ = reinterpret_cast<unsigned*>(sq + params.sq_off.array);
    sq_entries_ = params.sq_entries;
    auto* cq = static_cast<unsigned char*>(cq_map_);
    cq_head_ = reinterpret_cast<unsigned*>(cq + params.cq_off.head);
    cq_tail_ = reinterpret_cast<unsigned*>(cq + params.cq_off.tail);
    cq_mask_ = *reinterpret_cast<unsigned*>(cq + params.cq_off.ring_mask);
    cqes_ = reinterpret_cast<io_uring_cqe*>(cq + params.cq_off.cqes);
    local_tail_ = *sq_tail_;
  }

  ~Ring() {
    if (fd_ < 0) return;
    ::munmap(sqes_, sqes_bytes_);
    if (cq_map_ != sq_map_) ::munmap(cq_map_, cq_bytes_);
    ::munmap(sq_map_, sq_bytes_);
    ::close(fd_);
  }

  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  bool ok() const { return fd_ >= 0; }

  // Queues one read; the caller never has more than sq_entries in flight, so a slot is free
  // (with SQPOLL the kernel thread may not have consumed older SQEs yet: wait for it then).
  void push_read(int file, void* buffer, unsigned size, std::int64_t offset, std::uint64_t user_data,
                 bool force_async) {
    while (local_tail_ - __atomic_load_n(sq_head_, __ATOMIC_ACQUIRE) >= sq_entries_) std::this_thread::yield();
    const unsigned index = local_tail_ & sq_mask_;
    io_uring_sqe& sqe = sqes_[index];
    std::memset(&sqe, 0, sizeof sqe);
    sqe.opcode = IORING_OP_READ;
    sqe.fd = file;
    sqe.addr = reinterpret_cast<std::uint64_t>(buffer);
    sqe.len = size;
    sqe.off = static_cast<std::uint64_t>(offset);
    sqe.user_data = user_data;
    if (force_async) sqe.flags = IOSQE_ASYNC;
    sq_array_[index] = index;
    ++local_tail_;
    ++pending_;
  }

  // Publishes the queued SQEs and waits until at least `wait_for` completions are posted.
  void submit_and_wait(unsigned wait_for) {
    __atomic_store_n(sq_tail_, local_tail_, __ATOMIC_RELEASE);
    unsigned flags = wait_for > 0 ? IORING_ENTER_GETEVENTS : 0;
    unsigned to_submit = pending_;
    if (sqpoll_) {
      // The poller submits; the syscall is needed only to wake it or to sleep for CQEs.
      to_submit = 0;
      __atomic_thread_fence(__ATOMIC_SEQ_CST);  // tail store before the flags load
      if (__atomic_load_n(sq_flags_, __ATOMIC_RELAXED) & IORING_SQ_NEED_WAKEUP) flags |= IORING_ENTER_SQ_WAKEUP;
      pending_ = 0;
      if (flags == 0) return;
    }
    while (true) {
      const int got = sys_io_uring_enter(fd_, to_submit, wait_for, flags);
      if (got >= 0) {
        if (!sqpoll_) {
          pending_ -= static_cast<unsigned>(got);
          to_submit -= static_cast<unsigned>(got);
          if (to_submit > 0) continue;  // partial submit: push the rest
        }
        return;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EBUSY) {  // CQ overflow backpressure: our caller reaps next
        return;
      }
      die("io_uring_enter");
    }
  }

  // Calls fn(user_data, res) for each posted completion and frees their CQ slots.
  template <typename Fn>
  unsigned reap(Fn&& fn) {
    unsigned head = *cq_head_;
    const unsigned tail = __atomic_load_n(cq_tail_, __ATOMIC_ACQUIRE);
    unsigned count = 0;
    for (; head != tail; ++head, ++count) {
      const io_uring_cqe& cqe = cqes_[head & cq_mask_];
      fn(cqe.user_data, cqe.res);
    }
    __atomic_store_n(cq_head_, head, __ATOMIC_RELEASE);
    return count;
  }

 private:
  int fd_ = -1;
  bool sqpoll_ = false;
  std::size_t sq_bytes_ = 0, cq_bytes_ = 0, sqes_bytes_ = 0;
  void* sq_map_ = nullptr;
  void* cq_map_ = nullptr;
  io_uring_sqe* sqes_ = nullptr;
  unsigned *sq_head_ = nullptr, *sq_tail_ = nullptr, *sq_flags_ = nullptr, *sq_array_ = nullptr;
  unsigned *cq_head_ = nullptr, *cq_tail_ = nullptr;
  unsigned sq_mask_ = 0, cq_mask_ = 0, sq_entries_ = 0;
  io_uring_cqe* cqes_ = nullptr;
  unsigned local_tail_ = 0;  // our SQ tail, published in submit_and_wait()
  unsigned pending_ = 0;     // SQEs queued but not yet taken by the kernel
};

// One thread, `depth` slots. stream: refill a slot as soon as its read completes, so
// `depth` reads stay in flight. batch: fill all slots, wait for all, repeat.
Result uring_run(int fd, const std::vector<std::int64_t>& offsets, std::size_t size, std::size_t depth, bool sqpoll,
                 bool force_async, bool batch_mode) {
  int error = 0;
  Ring ring(static_cast<unsigned>(depth), sqpoll, &error);
  if (!ring.ok()) die(std::string("io_uring_setup") + (sqpoll ? " with SQPOLL" : "") + " refused", error);
  Result result;
  result.latencies_ns.resize(offsets.size());
  struct Slot {
    std::size_t read = 0;  // index into offsets
    std::size_t done = 0;  // bytes already read (short reads are continued)
    std::int64_t issued = 0;
  };
  std::vector<Slot> slots(depth);
  std::vector<unsigned char> buffers(depth * size);
  std::vector<std::size_t> free_slots;
  for (std::size_t s = depth; s-- > 0;) free_slots.push_back(s);
  std::size_t next = 0, completed = 0, in_flight = 0;

  auto issue = [&](std::size_t s) {
    Slot& slot = slots[s];
    ring.push_read(fd, buffers.data() + s * size + slot.done, static_cast<unsigned>(size - slot.done),
                   offsets[slot.read] + static_cast<std::int64_t>(slot.done), s, force_async);
  };
  auto start_reads = [&] {
    while (!free_slots.empty() && next < offsets.size()) {
      const std::size_t s = free_slots.back();
      free_slots.pop_back();
      slots[s] = Slot{next++, 0, now_ns()};
      issue(s);
      ++in_flight;
    }
  };
  auto on_completion = [&](std::uint64_t s, int res) {
    Slot& slot = slots[s];
    if (res < 0) die("io_uring read at " + std::to_string(offsets[slot.read]), -res);
    if (res == 0) die("io_uring read came back short (end of file) at " + std::to_string(offsets[slot.read]), 0);
    slot.done += static_cast<std::size_t>(res);
    if (slot.done < size) {  // short read: ask for the rest in the same slot
      ++result.short_reads;
      issue(s);
      return;
    }
    const unsigned char* data = buffers.data() + s * size;
    result.latencies_ns[slot.read] = now_ns() - slot.issued;
    result.checksum += checksum(data, size, offsets[slot.read]);
    free_slots.push_back(s);
    --in_flight;
    ++completed;
  };

  int samples = 0;
  while (completed < offsets.size()) {
    if (batch_mode) {
      if (in_flight == 0) start_reads();  // next batch only when the whole last one is done
    } else {
      start_reads();
    }
    // Sleep in the kernel for one completion (stream) or the whole batch (batch).
    ring.submit_and_wait(batch_mode ? static_cast<unsigned>(in_flight) : 1);
    ring.reap(on_completion);
    if ((++samples & 255) == 0) result.max_threads = std::max(result.max_threads, thread_count());
  }
  result.max_threads = std::max(result.max_threads, thread_count());
  return result;
}

// --- driver ----------------------------------------------------------------------------------

int probe() {
  int status = 0;
  for (bool sqpoll : {false, true}) {
    int error = 0;
    Ring ring(8, sqpoll, &error);
    if (ring.ok()) {
      std::printf("io_uring%s: permitted\n", sqpoll ? " SQPOLL" : "");
    } else {
      std::printf("io_uring%s: refused: %s (errno %d)\n", sqpoll ? " SQPOLL" : "", std::strerror(error), error);
      status = 1;
    }
  }
  return status;
}

int create(const char* path, std::int64_t bytes) {
  const int fd = ::open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) die(std::string("cannot create ") + path);
  std::vector<std::uint64_t> block((8 << 20) / sizeof(std::uint64_t));
  std::uint64_t state = 0x5EEDF11EULL;
  for (std::int64_t written = 0; written < bytes;) {
    for (auto& word : block) word = splitmix64(state);
    const auto chunk = static_cast<std::size_t>(std::min<std::int64_t>(bytes - written, block.size() * 8));
    const ssize_t put = ::write(fd, block.data(), chunk);
    if (put <= 0) die("write");
    written += put;
  }
  if (::fsync(fd) != 0) die("fsync");
  ::close(fd);
  return 0;
}

double percentile(std::vector<std::int64_t> values, double p) {
  if (values.empty()) return 0;
  const auto k = static_cast<std::size_t>(p * static_cast<double>(values.size() - 1));
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(k), values.end());
  return static_cast<double>(values[k]) / 1000.0;
}

void usage() {
  std::fprintf(stderr,
               "usage: read_depth --file PATH --backend pool|uring|sqpoll|uring-async [--mode stream|batch] [--size BYTES]\n"
               "                  [--reads N] [--depth N] [--threads N] [--seed N] [--align BYTES] [--no-evict]\n"
               "                  [--label TEXT]\n"
               "       read_depth --create PATH --bytes N\n"
               "       read_depth --resident PATH\n"
               "       read_depth --probe\n");
  std::exit(64);
}

}  // namespace

int main(int argc, char** argv) {
  std::string path, backend = "pool", mode = "stream", label = "-", create_path, resident_path;
  std::size_t size = 2050, reads = 20000, depth = 32, threads = 0;
  std::uint64_t seed = 1;
  std::int64_t create_bytes = 4LL << 30, align = 2;
  bool do_evict = true, do_probe = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage();
      return argv[++i];
    };
    if (arg == "--file") path = value();
    else if (arg == "--backend") backend = value();
    else if (arg == "--mode") mode = value();
    else if (arg == "--size") size = std::stoul(value());
    else if (arg == "--reads") reads = std::stoul(value());
    else if (arg == "--depth") depth = std::stoul(value());
    else if (arg == "--threads") threads = std::stoul(value());
    else if (arg == "--seed") seed = std::stoull(value());
    else if (arg == "--align") align = std::stoll(value());
    else if (arg == "--label") label = value();
    else if (arg == "--no-evict") do_evict = false;
    else if (arg == "--create") create_path = value();
    else if (arg == "--bytes") create_bytes = std::stoll(value());
    else if (arg == "--resident") resident_path = value();
    else if (arg == "--probe") do_probe = true;
    else usage();
  }
  if (do_probe) return probe();
  if (!create_path.empty()) return create(create_path.c_str(), create_bytes);
  if (!resident_path.empty()) {
    const int fd = ::open(resident_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("cannot open " + resident_path);
    std::printf("resident_pages=%zu\n", resident_pages(fd));
    return 0;
  }
  if (path.empty() || size == 0 || reads == 0 || depth == 0 || align <= 0) usage();
  if (backend != "pool" && backend != "uring" && backend != "sqpoll" && backend != "uring-async") usage();
  if (mode != "stream" && mode != "batch") usage();
  if (threads == 0) threads = depth;
  const bool batch_mode = mode == "batch";

  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) die("cannot open " + path);
  // Same advice as FileSource: no readahead around small random reads (read_ahead_kb here
  // may be large, and it would turn each 2 KiB read into a much bigger one).
  (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
  const std::int64_t bytes = file_size(fd);
  if (bytes < static_cast<std::int64_t>(size)) die("file smaller than one read", 0);
  const std::vector<std::int64_t> offsets = make_offsets(bytes, size, reads, seed, align);

  if (do_evict) evict(fd);
  const std::size_t resident_before = resident_pages(fd);

  const CpuSample cpu_start = cpu_sample();
  const std::int64_t start = now_ns();
  Result result;
  if (backend == "pool") {
    result = batch_mode ? pool_batch(fd, offsets, size, threads, depth) : pool_stream(fd, offsets, size, threads);
  } else {
    result = uring_run(fd, offsets, size, depth, backend == "sqpoll", backend == "uring-async", batch_mode);
  }
  const double seconds = static_cast<double>(now_ns() - start) * 1e-9;
  const CpuSample cpu_end = cpu_sample();

  const double machine_total = static_cast<double>(cpu_end.machine_total - cpu_start.machine_total);
  const double machine_busy =
      machine_total > 0 ? 100.0 * static_cast<double>(cpu_end.machine_busy - cpu_start.machine_busy) / machine_total
                        : 0;
  double load = 0;
  if (FILE* loadavg = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(loadavg, "%lf", &load) != 1) load = 0;
    std::fclose(loadavg);
  }
  std::printf(
      "label=%s backend=%s mode=%s size=%zu depth=%zu threads=%zu reads=%zu resident_before=%zu secs=%.3f "
      "reads_per_s=%.0f MB_s=%.2f lat_p50_us=%.0f lat_p99_us=%.0f cpu_us_per_read=%.2f machine_busy_pct=%.0f "
      "max_threads=%d short_reads=%zu load1=%.2f checksum=%016llx\n",
      label.c_str(), backend.c_str(), mode.c_str(), size, depth, threads, reads,
      resident_before, seconds, static_cast<double>(reads) / seconds,
      static_cast<double>(reads) * static_cast<double>(size) / seconds / 1e6, percentile(result.latencies_ns, 0.5),
      percentile(result.latencies_ns, 0.99), (cpu_end.process_s - cpu_start.process_s) * 1e6 / static_cast<double>(reads),
      machine_busy, result.max_threads, result.short_reads, load, static_cast<unsigned long long>(result.checksum));
  ::close(fd);
  return 0;
}
