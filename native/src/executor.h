// MorselExecutor: a fixed pool of native threads that runs the morsels of many concurrent jobs.
//
// A job is "call fn(i) for every morsel index i in [0, count)". Workers take one morsel at a time
// from the job at the head of a round-robin list, so concurrent jobs (one per busy task slot) share
// the threads fairly instead of first-come-first-served. At most `threads` morsels run at once,
// counting the calling thread, which runs morsels of its own job while it would otherwise wait. Results are written by fn into slots the
// caller preallocated by index, which keeps them in input order whatever order morsels finish in.
// Idle workers block on a condition variable; they never spin.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace sabot {

struct MorselRange {
  int64_t offset;
  int64_t length;
  // Input made of several batches (a table's chunks): the batch the morsel lies in. The offset then
  // counts rows across all batches; a morsel never spans two batches.
  size_t batch = 0;
};

// Splits rows into morsels of about target_bytes each (at least one row per morsel). Zero rows give
// no morsels.
std::vector<MorselRange> split_morsels(int64_t num_rows, double bytes_per_row, int64_t target_bytes);

struct ExecutorStats {
  int threads;
  uint64_t morsels_created;
  uint64_t morsels_processed;
  uint64_t morsels_failed;
  uint64_t morsels_cancelled;
  uint64_t batches;
  uint64_t queue_depth;
  double busy_seconds;
};

class MorselExecutor {
 public:
  explicit MorselExecutor(int threads);
  ~MorselExecutor();
  MorselExecutor(const MorselExecutor&) = delete;
  MorselExecutor& operator=(const MorselExecutor&) = delete;

  // Runs fn(i) for every i in [0, count) and blocks until all have finished. The first morsel to
  // fail cancels the job's morsels that have not started; once the running ones finish, the
  // exception of the lowest failed index is rethrown here. Called from one of this executor's own
  // workers, the job runs inline on that worker (nested parallelism would deadlock the pool).
  void parallel_for(size_t count, const std::function<void(size_t)>& fn);

  // Stops accepting work, cancels queued morsels (their callers get ExecutorShutdown), waits for
  // running morsels and joins the threads. Safe to call twice.
  void shutdown() noexcept;

  int threads() const noexcept { return thread_count_; }
  ExecutorStats stats() const noexcept;

 private:
  struct Job;
  void worker_loop();
  void run_one(Job& job, size_t index);
  // The *_locked helpers require mutex_ to be held.
  size_t claim_locked(const std::shared_ptr<Job>& job);
  void finish_morsel_locked();
  void cancel_unclaimed_locked(const std::shared_ptr<Job>& job);

  const int thread_count_;
  mutable std::mutex mutex_;
  std::condition_variable work_available_;
  std::deque<std::shared_ptr<Job>> runnable_;  // jobs with morsels not yet claimed, round-robin
  int active_ = 0;  // morsels running now, on workers or callers: never more than thread_count_
  bool stopping_ = false;
  std::vector<std::thread> workers_;

  std::atomic<uint64_t> morsels_created_{0};
  std::atomic<uint64_t> morsels_processed_{0};
  std::atomic<uint64_t> morsels_failed_{0};
  std::atomic<uint64_t> morsels_cancelled_{0};
  std::atomic<uint64_t> batches_{0};
  std::atomic<uint64_t> busy_nanos_{0};
};

// The number of cores this process may run on (sched_getaffinity), at least 1.
int available_cores() noexcept;

// Runs the morsels of one kernel call: on a MorselExecutor when one is given (which raises
// ExecutorShutdown once it was shut down), otherwise inline on the calling thread, one after another.
class KernelRunner {
 public:
  KernelRunner(MorselExecutor* executor, int64_t morsel_bytes);

  std::vector<MorselRange> split(int64_t num_rows, double bytes_per_row) const;
  // Morsels of consecutive batches whose rows are numbered across them: batch b holds rows
  // [starts[b], starts[b + 1]). Each morsel lies in one batch.
  std::vector<MorselRange> split_batches(const std::vector<int64_t>& starts, double bytes_per_row) const;
  void run(size_t count, const std::function<void(size_t)>& task) const;

 private:
  MorselExecutor* executor_;
  int64_t morsel_bytes_;
};

}  // namespace sabot
