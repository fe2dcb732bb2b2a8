// TaskSlotManager: bounds how many tasks run at once on an agent (the SabotJob's slotsPerAgent).
//
// A task holds one slot from acquire() to release(); its morsels run on the agent's shared
// MorselExecutor, which round-robins between concurrent jobs, so busy slots share the threads fairly.
// acquire blocks on a condition variable (no spinning) until a slot is free or the manager is closed.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace sabot {

class TaskSlotManager {
 public:
  explicit TaskSlotManager(int slots);

  // Blocks until a slot is free and returns its id. Throws ExecutorShutdown (naming the task) once
  // close() was called.
  int acquire(const std::string& task);
  void release(int slot_id);
  // Wakes every waiter with ExecutorShutdown; running tasks keep their slots until released.
  void close() noexcept;

  int total() const noexcept { return static_cast<int>(busy_.size()); }
  int busy() const noexcept;

 private:
  mutable std::mutex mutex_;
  std::condition_variable slot_freed_;
  std::vector<bool> busy_;  // per slot
  bool closed_ = false;
};

}  // namespace sabot
