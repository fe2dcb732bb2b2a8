#include "task_slots.h"

#include <algorithm>

#include "errors.h"

namespace sabot {

TaskSlotManager::TaskSlotManager(int slots) {
  if (slots <= 0) throw InvalidArgument("slots must be > 0, got " + std::to_string(slots));
  busy_.assign(static_cast<size_t>(slots), false);
}

int TaskSlotManager::acquire(const std::string& task) {
  std::unique_lock<std::mutex> lock(mutex_);
  auto free_slot = [this] { return std::find(busy_.begin(), busy_.end(), false); };
  slot_freed_.wait(lock, [&] { return closed_ || free_slot() != busy_.end(); });
  if (closed_) throw ExecutorShutdown("the task slot manager is closed (task '" + task + "')");
  auto slot = free_slot();
  *slot = true;
  return static_cast<int>(slot - busy_.begin());
}

void TaskSlotManager::release(int slot_id) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (slot_id < 0 || slot_id >= static_cast<int>(busy_.size()) || !busy_[static_cast<size_t>(slot_id)]) {
      throw InvalidArgument("slot " + std::to_string(slot_id) + " is not held");
    }
    busy_[static_cast<size_t>(slot_id)] = false;
  }
  slot_freed_.notify_one();
}

void TaskSlotManager::close() noexcept {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    closed_ = true;
  }
  slot_freed_.notify_all();
}

int TaskSlotManager::busy() const noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int>(std::count(busy_.begin(), busy_.end(), true));
}

}  // namespace sabot
