#include "thread_pool.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <set>
#include <string>
#include <utility>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define MOE_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define MOE_CPU_RELAX() __asm__ __volatile__("yield")
#else
#define MOE_CPU_RELAX() ((void)0)
#endif

namespace moe::runtime {

namespace {
// How long an idle worker keeps spinning before it sleeps: long enough to cover the gap between
// the jobs of one forward pass, short enough not to burn a core between requests.
constexpr auto kSpinTime = std::chrono::microseconds(200);
}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
    threads_.reserve(static_cast<size_t>(n_threads_ - 1));
    for (int i = 1; i < n_threads_; ++i) threads_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_.store(true);
    }
    wake_.notify_all();
    for (std::thread& t : threads_) t.join();
}

void ThreadPool::worker(int index) {
    uint64_t seen = 0;
    for (;;) {
        // Spin first, then sleep until the generation moves on.
        const auto spin_until = std::chrono::steady_clock::now() + kSpinTime;
        int spins = 0;
        while (generation_.load(std::memory_order_acquire) == seen && !stopping_.load(std::memory_order_relaxed)) {
            MOE_CPU_RELAX();
            if ((++spins & 1023) == 0 && std::chrono::steady_clock::now() > spin_until) {
                std::unique_lock<std::mutex> lock(mutex_);
                ++sleeping_;
                wake_.wait(lock, [&] { return stopping_.load() || generation_.load() != seen; });
                --sleeping_;
                break;
            }
        }
        if (stopping_.load()) return;
        seen = generation_.load(std::memory_order_acquire);
        const std::function<void(int, int)>* job = job_;
        try {
            (*job)(index, n_threads_);
        } catch (...) {
            std::lock_guard<std::mutex> lock(mutex_);
            if (!error_) error_ = std::current_exception();
        }
        pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
}

void ThreadPool::run(const std::function<void(int, int)>& fn) {
    if (n_threads_ == 1) {
        fn(0, 1);
        return;
    }
    bool any_sleeping;
    {
        // Published under the lock so a worker checking its wait predicate cannot miss it.
        std::lock_guard<std::mutex> lock(mutex_);
        job_ = &fn;
        error_ = nullptr;
        pending_.store(n_threads_ - 1, std::memory_order_relaxed);
        generation_.fetch_add(1, std::memory_order_release);
        any_sleeping = sleeping_ > 0;
    }
    if (any_sleeping) wake_.notify_all();
    std::exception_ptr error;
    try {
        fn(0, n_threads_);
    } catch (...) {
        error = std::current_exception();
    }
    for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) {
        if (spins < 4096) {
            MOE_CPU_RELAX();
        } else {
            std::this_thread::yield();
        }
    }
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = nullptr;
    if (!error) error = error_;
    error_ = nullptr;
    if (error) std::rethrow_exception(error);
}

void ThreadPool::parallel_for(int64_t n, int64_t min_chunk,
                              const std::function<void(int64_t, int64_t, int)>& fn) {
    if (n <= 0) return;
    min_chunk = std::max<int64_t>(1, min_chunk);
    // About four chunks per thread balances uneven work without much hand-out traffic.
    const int64_t chunk = std::max(min_chunk, (n + 4 * n_threads_ - 1) / (4 * n_threads_));
    if (n_threads_ == 1 || n <= chunk) {
        fn(0, n, 0);
        return;
    }
    std::atomic<int64_t> next{0};
    run([&](int thread, int) {
        for (;;) {
            const int64_t begin = next.fetch_add(chunk, std::memory_order_relaxed);
            if (begin >= n) break;
            fn(begin, std::min(n, begin + chunk), thread);
        }
    });
}

int ThreadPool::physical_cores() noexcept {
    const int logical = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
#if defined(__linux__)
    // Count distinct (physical id, core id) pairs; SMT siblings share one.
    std::ifstream cpuinfo("/proc/cpuinfo");
    std::set<std::pair<std::string, std::string>> cores;
    std::string line, physical = "0";
    while (std::getline(cpuinfo, line)) {
        const auto value = [&] { return line.substr(line.find(':') + 1); };
        if (line.rfind("physical id", 0) == 0) physical = value();
        if (line.rfind("core id", 0) == 0) cores.emplace(physical, value());
    }
    if (!cores.empty()) return std::min(logical, static_cast<int>(cores.size()));
#endif
    return logical;
}

}  // namespace moe::runtime
