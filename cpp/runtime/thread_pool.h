// A fixed pool of worker threads of our own (never the libuv pool) for the data-parallel parts of a
// forward pass. The calling thread takes part as thread 0, so a pool of n runs n-way parallel with
// n - 1 extra threads. One job at a time: run() is not reentrant and must be called from one thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace moe::runtime {

class ThreadPool {
public:
    // n_threads >= 1 (values below 1 are treated as 1).
    explicit ThreadPool(int n_threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const noexcept { return n_threads_; }

    // Runs fn(thread_index, n_threads) once on every thread and returns when all are done. An
    // exception thrown by any thread is rethrown here (the first one) after all have finished.
    void run(const std::function<void(int thread, int n_threads)>& fn);

    // Splits [0, n) into contiguous chunks of at least `min_chunk` items, handed out dynamically,
    // and calls fn(begin, end, thread) for each. Returns when all are done.
    void parallel_for(int64_t n, int64_t min_chunk, const std::function<void(int64_t begin, int64_t end, int thread)>& fn);

    // Physical cores of this machine (best effort; falls back to the logical count).
    static int physical_cores() noexcept;

private:
    void worker(int index);

    int n_threads_;
    std::vector<std::thread> threads_;
    // Workers spin for a short while after each job before they sleep: a forward pass hands out
    // hundreds of small jobs per token, and waking a sleeping thread costs tens of microseconds.
    std::mutex mutex_;
    std::condition_variable wake_;
    const std::function<void(int, int)>* job_ = nullptr;
    std::atomic<uint64_t> generation_{0};
    std::atomic<int> pending_{0};
    int sleeping_ = 0;  // guarded by mutex_
    std::atomic<bool> stopping_{false};
    std::exception_ptr error_;  // guarded by mutex_
};

}  // namespace moe::runtime
