#include "executor.h"

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>

#include "errors.h"

namespace sabot {

namespace {
// Set on pool threads so a nested parallel_for runs inline instead of waiting on its own pool.
thread_local const MorselExecutor* current_pool = nullptr;
}  // namespace

std::vector<MorselRange> split_morsels(int64_t num_rows, double bytes_per_row, int64_t target_bytes) {
  if (num_rows < 0) throw InvalidArgument("num_rows must be >= 0, got " + std::to_string(num_rows));
  if (target_bytes <= 0) {
    throw InvalidArgument("morsel_bytes must be > 0, got " + std::to_string(target_bytes));
  }
  std::vector<MorselRange> morsels;
  if (num_rows == 0) return morsels;
  const double per_row = std::max(bytes_per_row, 1.0);
  const int64_t rows_per_morsel =
      std::max<int64_t>(1, static_cast<int64_t>(std::floor(static_cast<double>(target_bytes) / per_row)));
  const int64_t count = (num_rows + rows_per_morsel - 1) / rows_per_morsel;
  // Even sizes instead of a short tail, so the last morsel is not a straggler.
  const int64_t base = num_rows / count;
  const int64_t remainder = num_rows % count;
  morsels.reserve(static_cast<size_t>(count));
  int64_t offset = 0;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t length = base + (i < remainder ? 1 : 0);
    morsels.push_back({offset, length});
    offset += length;
  }
  return morsels;
}

int available_cores() noexcept {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int count = CPU_COUNT(&set);
    if (count > 0) return count;
  }
  const unsigned hardware = std::thread::hardware_concurrency();
  return hardware > 0 ? static_cast<int>(hardware) : 1;
}

struct MorselExecutor::Job {
  const std::function<void(size_t)>* fn;
  size_t count;
  size_t next_unclaimed = 0;  // guarded by the executor's mutex
  size_t finished = 0;        // guarded by done_mutex
  bool cancelled = false;     // guarded by the executor's mutex
  size_t first_failed_index = SIZE_MAX;  // guarded by done_mutex
  std::exception_ptr first_error;        // guarded by done_mutex
  std::mutex done_mutex;
  std::condition_variable all_done;
};

MorselExecutor::MorselExecutor(int threads) : thread_count_(threads) {
  if (threads <= 0) throw InvalidArgument("threads must be > 0, got " + std::to_string(threads));
  workers_.reserve(static_cast<size_t>(threads));
  for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

MorselExecutor::~MorselExecutor() { shutdown(); }

void MorselExecutor::parallel_for(size_t count, const std::function<void(size_t)>& fn) {
  batches_.fetch_add(1, std::memory_order_relaxed);
  morsels_created_.fetch_add(count, std::memory_order_relaxed);
  if (count == 0) return;

  auto job = std::make_shared<Job>();
  job->fn = &fn;
  job->count = count;

  if (current_pool == this) {
    for (size_t i = 0; i < count; ++i) {
      run_one(*job, i);
      if (job->first_error) break;
    }
    if (job->first_error) std::rethrow_exception(job->first_error);
    return;
  }

  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) throw ExecutorShutdown("the executor is shut down; no new work is accepted");
    runnable_.push_back(job);
  }
  work_available_.notify_all();

  std::unique_lock<std::mutex> done_lock(job->done_mutex);
  job->all_done.wait(done_lock, [&] { return job->finished == job->count; });
  if (job->first_error) std::rethrow_exception(job->first_error);
}

void MorselExecutor::run_one(Job& job, size_t index) {
  const auto started = std::chrono::steady_clock::now();
  std::exception_ptr error;
  try {
    (*job.fn)(index);
  } catch (...) {
    error = std::current_exception();
  }
  const auto elapsed = std::chrono::steady_clock::now() - started;
  busy_nanos_.fetch_add(
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count()),
      std::memory_order_relaxed);

  if (error) {
    morsels_failed_.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard<std::mutex> lock(mutex_);
    job.cancelled = true;
  } else {
    morsels_processed_.fetch_add(1, std::memory_order_relaxed);
  }

  std::lock_guard<std::mutex> done_lock(job.done_mutex);
  if (error && index < job.first_failed_index) {
    job.first_failed_index = index;
    job.first_error = error;
  }
  ++job.finished;
  if (job.finished == job.count) job.all_done.notify_all();
}

void MorselExecutor::worker_loop() {
  current_pool = this;
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    work_available_.wait(lock, [this] { return stopping_ || !runnable_.empty(); });
    if (runnable_.empty()) return;  // stopping and nothing left to hand out

    std::shared_ptr<Job> job = runnable_.front();
    runnable_.pop_front();
    if (job->cancelled) {
      // Account for the morsels nobody will run so the waiting caller wakes up.
      const size_t skipped = job->count - job->next_unclaimed;
      job->next_unclaimed = job->count;
      morsels_cancelled_.fetch_add(skipped, std::memory_order_relaxed);
      lock.unlock();
      {
        std::lock_guard<std::mutex> done_lock(job->done_mutex);
        job->finished += skipped;
        if (job->finished == job->count) job->all_done.notify_all();
      }
      lock.lock();
      continue;
    }
    const size_t index = job->next_unclaimed++;
    // Back of the line: the next worker serves another job first (fair sharing across slots).
    if (job->next_unclaimed < job->count) runnable_.push_back(job);
    lock.unlock();
    run_one(*job, index);
    lock.lock();
  }
}

void MorselExecutor::shutdown() noexcept {
  std::deque<std::shared_ptr<Job>> abandoned;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_ && workers_.empty()) return;
    stopping_ = true;
    abandoned.swap(runnable_);
    for (auto& job : abandoned) job->cancelled = true;
  }
  work_available_.notify_all();

  const auto shut_down = std::make_exception_ptr(
      ExecutorShutdown("the executor was shut down before this work ran"));
  for (auto& job : abandoned) {
    size_t skipped;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      skipped = job->count - job->next_unclaimed;
      job->next_unclaimed = job->count;
    }
    morsels_cancelled_.fetch_add(skipped, std::memory_order_relaxed);
    std::lock_guard<std::mutex> done_lock(job->done_mutex);
    if (!job->first_error) {
      job->first_error = shut_down;
      job->first_failed_index = job->count;
    }
    job->finished += skipped;
    if (job->finished == job->count) job->all_done.notify_all();
  }

  for (auto& worker : workers_) {
    if (worker.joinable()) worker.join();
  }
  std::lock_guard<std::mutex> lock(mutex_);
  workers_.clear();
}

ExecutorStats MorselExecutor::stats() const noexcept {
  ExecutorStats s;
  uint64_t queued = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    s.threads = static_cast<int>(workers_.size());
    for (const auto& job : runnable_) queued += job->count - job->next_unclaimed;
  }
  s.morsels_created = morsels_created_.load(std::memory_order_relaxed);
  s.morsels_processed = morsels_processed_.load(std::memory_order_relaxed);
  s.morsels_failed = morsels_failed_.load(std::memory_order_relaxed);
  s.morsels_cancelled = morsels_cancelled_.load(std::memory_order_relaxed);
  s.batches = batches_.load(std::memory_order_relaxed);
  s.queue_depth = queued;
  s.busy_seconds = static_cast<double>(busy_nanos_.load(std::memory_order_relaxed)) / 1e9;
  return s;
}

}  // namespace sabot
