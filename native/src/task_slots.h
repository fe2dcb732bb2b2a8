// TaskSlotManager: bounds how many tasks run at once on an agent (the SabotJob's slotsPerAgent).
//
// A task holds one slot from acquire() to release(); its morsels run on the shared MorselExecutor,
// which round-robins between concurrent jobs, so busy slots share the threads fairly. Shrinking
// never interrupts a running task: free slots go first, then busy ones retire when released.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace sabot {

struct SlotStats {
  int64_t slot_id;
  bool busy;
  bool retiring;
  std::string current_task;
  uint64_t tasks_run;
  uint64_t local_morsels;
  uint64_t network_morsels;
  double busy_seconds;
};

class TaskSlotManager {
 public:
  explicit TaskSlotManager(int slots);

  // Blocks until a slot is free and returns its id; returns -1 if timeout_seconds (>= 0) passed
  // first. A negative timeout waits without limit. Throws ExecutorShutdown once close() was called.
  int64_t acquire(const std::string& task, double timeout_seconds);
  void release(int64_t slot_id);
  // Counts morsels a task processed: local ones read from this agent's inputs, network ones
  // received from peers over Flight.
  void record_morsels(int64_t slot_id, uint64_t local, uint64_t network);

  void resize(int slots);
  // Wakes every waiter with ExecutorShutdown; running tasks keep their slots until released.
  void close() noexcept;

  int total() const noexcept;  // the target slot count
  int busy() const noexcept;
  std::vector<SlotStats> stats() const;

 private:
  struct Slot {
    int64_t id;
    bool busy = false;
    bool retiring = false;
    std::string task;
    uint64_t tasks_run = 0;
    uint64_t local_morsels = 0;
    uint64_t network_morsels = 0;
    std::chrono::steady_clock::time_point acquired_at;
    std::chrono::nanoseconds busy_time{0};
  };
  Slot* find(int64_t slot_id);
  Slot* free_slot();

  mutable std::mutex mutex_;
  std::condition_variable slot_freed_;
  std::vector<Slot> slots_;
  int target_ = 0;
  int64_t next_id_ = 0;
  bool closed_ = false;
};

}  // namespace sabot
