#include "task_slots.h"

#include <algorithm>

#include "errors.h"

namespace sabot {

namespace {
void check_slot_count(int slots) {
  if (slots <= 0) throw InvalidArgument("slots must be > 0, got " + std::to_string(slots));
}
}  // namespace

TaskSlotManager::TaskSlotManager(int slots) {
  check_slot_count(slots);
  resize(slots);
}

TaskSlotManager::Slot* TaskSlotManager::find(int64_t slot_id) {
  for (auto& slot : slots_) {
    if (slot.id == slot_id) return &slot;
  }
  return nullptr;
}

TaskSlotManager::Slot* TaskSlotManager::free_slot() {
  for (auto& slot : slots_) {
    if (!slot.busy && !slot.retiring) return &slot;
  }
  return nullptr;
}

int64_t TaskSlotManager::acquire(const std::string& task, double timeout_seconds) {
  std::unique_lock<std::mutex> lock(mutex_);
  auto ready = [this] { return closed_ || free_slot() != nullptr; };
  if (timeout_seconds < 0) {
    slot_freed_.wait(lock, ready);
  } else if (!slot_freed_.wait_for(lock, std::chrono::duration<double>(timeout_seconds), ready)) {
    return -1;
  }
  if (closed_) throw ExecutorShutdown("the task slot manager is closed");
  Slot* slot = free_slot();
  slot->busy = true;
  slot->task = task;
  slot->acquired_at = std::chrono::steady_clock::now();
  return slot->id;
}

void TaskSlotManager::release(int64_t slot_id) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    Slot* slot = find(slot_id);
    if (slot == nullptr || !slot->busy) {
      throw InvalidArgument("slot " + std::to_string(slot_id) + " is not held");
    }
    slot->busy = false;
    slot->task.clear();
    ++slot->tasks_run;
    slot->busy_time += std::chrono::steady_clock::now() - slot->acquired_at;
    if (slot->retiring) {
      slots_.erase(slots_.begin() + (slot - slots_.data()));
    }
  }
  slot_freed_.notify_all();
}

void TaskSlotManager::record_morsels(int64_t slot_id, uint64_t local, uint64_t network) {
  std::lock_guard<std::mutex> lock(mutex_);
  Slot* slot = find(slot_id);
  if (slot == nullptr) throw InvalidArgument("unknown slot " + std::to_string(slot_id));
  slot->local_morsels += local;
  slot->network_morsels += network;
}

void TaskSlotManager::resize(int slots) {
  check_slot_count(slots);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    target_ = slots;
    // Growing first brings back slots that were retiring, then adds new ones.
    int active = 0;
    for (auto& slot : slots_) active += slot.retiring ? 0 : 1;
    for (auto& slot : slots_) {
      if (active >= target_) break;
      if (slot.retiring) {
        slot.retiring = false;
        ++active;
      }
    }
    while (active < target_) {
      Slot slot;
      slot.id = next_id_++;
      slots_.push_back(slot);
      ++active;
    }
    // Shrinking removes free slots first (newest first), then retires busy ones.
    for (auto it = slots_.end(); active > target_ && it != slots_.begin();) {
      --it;
      if (!it->busy && !it->retiring) {
        it = slots_.erase(it);
        --active;
      }
    }
    for (auto it = slots_.rbegin(); active > target_ && it != slots_.rend(); ++it) {
      if (!it->retiring) {
        it->retiring = true;
        --active;
      }
    }
  }
  slot_freed_.notify_all();
}

void TaskSlotManager::close() noexcept {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    closed_ = true;
  }
  slot_freed_.notify_all();
}

int TaskSlotManager::total() const noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  return target_;
}

int TaskSlotManager::busy() const noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int>(std::count_if(slots_.begin(), slots_.end(), [](const Slot& s) { return s.busy; }));
}

std::vector<SlotStats> TaskSlotManager::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto now = std::chrono::steady_clock::now();
  std::vector<SlotStats> out;
  out.reserve(slots_.size());
  for (const auto& slot : slots_) {
    auto busy_time = slot.busy_time;
    if (slot.busy) busy_time += now - slot.acquired_at;
    out.push_back({slot.id, slot.busy, slot.retiring, slot.task, slot.tasks_run, slot.local_morsels,
                   slot.network_morsels, std::chrono::duration<double>(busy_time).count()});
  }
  return out;
}

}  // namespace sabot
