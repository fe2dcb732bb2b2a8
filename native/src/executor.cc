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
  bool cancelled = false;     // guarded by the executor's mutex
  size_t finished = 0;        // guarded by done_mutex
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
    std::unique_lock<std::mutex> lock(mutex_);
    if (stopping_) throw ExecutorShutdown("the executor is shut down; no new work is accepted");
    runnable_.push_back(job);
    if (count > 1) work_available_.notify_all();
    // The caller would only sleep until its job is done, so it runs its own morsels whenever a
    // compute token is free: small jobs then finish without a thread handoff. It steps aside as
    // soon as another job is waiting, so the workers' round-robin keeps concurrent jobs fair.
    while (!job->cancelled && job->next_unclaimed < job->count && active_ < thread_count_ &&
           runnable_.size() == 1) {
      const size_t index = claim_locked(job);
      lock.unlock();
      run_one(*job, index);
      lock.lock();
      finish_morsel_locked();
    }
    if (job->cancelled) cancel_unclaimed_locked(job);
  }

  std::unique_lock<std::mutex> done_lock(job->done_mutex);
  job->all_done.wait(done_lock, [&] { return job->finished == job->count; });
  if (job->first_error) std::rethrow_exception(job->first_error);
}

size_t MorselExecutor::claim_locked(const std::shared_ptr<Job>& job) {
  const size_t index = job->next_unclaimed++;
  if (job->next_unclaimed == job->count) {
    runnable_.erase(std::find(runnable_.begin(), runnable_.end(), job));
  }
  ++active_;
  return index;
}

void MorselExecutor::finish_morsel_locked() {
  --active_;
  if (!runnable_.empty()) work_available_.notify_one();
}

void MorselExecutor::cancel_unclaimed_locked(const std::shared_ptr<Job>& job) {
  const size_t skipped = job->count - job->next_unclaimed;
  if (skipped == 0) return;
  job->next_unclaimed = job->count;
  runnable_.erase(std::find(runnable_.begin(), runnable_.end(), job));
  morsels_cancelled_.fetch_add(skipped, std::memory_order_relaxed);
  // Lock order is always mutex_ then done_mutex.
  std::lock_guard<std::mutex> done_lock(job->done_mutex);
  if (!job->first_error) {  // only a shutdown cancels a job that has no failed morsel
    job->first_error = std::make_exception_ptr(
        ExecutorShutdown("the executor was shut down before this work ran"));
    job->first_failed_index = job->count;
  }
  job->finished += skipped;
  if (job->finished == job->count) job->all_done.notify_all();
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
  } else {
    morsels_processed_.fetch_add(1, std::memory_order_relaxed);
  }
  {
    std::lock_guard<std::mutex> done_lock(job.done_mutex);
    if (error && index < job.first_failed_index) {
      job.first_failed_index = index;
      job.first_error = error;
    }
    ++job.finished;
    if (job.finished == job.count) job.all_done.notify_all();
  }
  if (error) {
    std::lock_guard<std::mutex> lock(mutex_);
    job.cancelled = true;
  }
}

void MorselExecutor::worker_loop() {
  current_pool = this;
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    work_available_.wait(lock, [this] { return stopping_ || (!runnable_.empty() && active_ < thread_count_); });
    if (stopping_ && runnable_.empty()) return;
    if (runnable_.empty() || active_ >= thread_count_) continue;

    std::shared_ptr<Job> job = runnable_.front();
    if (job->cancelled) {
      cancel_unclaimed_locked(job);
      continue;
    }
    const size_t index = claim_locked(job);
    // Back of the line: the next worker serves another job first (fair sharing across slots).
    if (job->next_unclaimed < job->count) {
      runnable_.pop_front();
      runnable_.push_back(job);
    }
    lock.unlock();
    run_one(*job, index);
    lock.lock();
    finish_morsel_locked();
  }
}

void MorselExecutor::shutdown() noexcept {
  {
    std::unique_lock<std::mutex> lock(mutex_);
    if (stopping_ && workers_.empty()) return;
    stopping_ = true;
    while (!runnable_.empty()) {
      std::shared_ptr<Job> job = runnable_.front();
      job->cancelled = true;
      cancel_unclaimed_locked(job);
    }
  }
  work_available_.notify_all();
  for (auto& worker : workers_) {
    if (worker.joinable()) worker.join();
  }
  std::lock_guard<std::mutex> lock(mutex_);
  workers_.clear();
}

KernelRunner::KernelRunner(MorselExecutor* executor, int64_t morsel_bytes)
    : executor_(executor), morsel_bytes_(morsel_bytes) {
  if (morsel_bytes <= 0) throw InvalidArgument("morsel_bytes must be > 0, got " + std::to_string(morsel_bytes));
}

std::vector<MorselRange> KernelRunner::split(int64_t num_rows, double bytes_per_row) const {
  return split_morsels(num_rows, bytes_per_row, morsel_bytes_);
}

std::vector<MorselRange> KernelRunner::split_batches(const std::vector<int64_t>& starts, double bytes_per_row) const {
  std::vector<MorselRange> morsels;
  for (size_t b = 0; b + 1 < starts.size(); ++b) {
    for (MorselRange morsel : split_morsels(starts[b + 1] - starts[b], bytes_per_row, morsel_bytes_)) {
      morsel.offset += starts[b];
      morsel.batch = b;
      morsels.push_back(morsel);
    }
  }
  return morsels;
}

void KernelRunner::run(size_t count, const std::function<void(size_t)>& task) const {
  if (executor_ != nullptr && count > 0) {
    executor_->parallel_for(count, task);
    return;
  }
  for (size_t i = 0; i < count; ++i) task(i);
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
