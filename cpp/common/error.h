// Engine-side error type. The N-API edge (cpp/napi/) maps each code to a typed JS error class;
// nothing in the engine knows about JS.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace moe {

enum class ErrorCode : int {
    GgufFormat = 1,       // the file is not a valid GGUF (JS: GgufError, carries the byte offset)
    UnsupportedType = 2,  // a known ggml type this build cannot compute with (JS: UnsupportedTypeError)
    InvalidArgument = 3,  // bad option / bad shape passed by the caller (JS: RangeError or TypeError)
    CpuUnsupported = 4,   // the CPU lacks an instruction set that was required or requested (JS: CpuUnsupportedError)
    Io = 5,               // open / stat / mmap failed (JS: Error with the errno text)
    OutOfMemory = 6,      // an allocation failed (JS: OutOfMemoryError)
    Aborted = 7,          // the caller aborted the work (JS: AbortError)
    ContextOverflow = 8,  // a sequence would grow past its context size (JS: ContextOverflowError)
    ModelFormat = 9,      // a valid GGUF that is not a model we can run: missing key/tensor, bad shape, unknown arch
    StateFormat = 10,     // a saved sequence state that is not one, is damaged or belongs to another model (JS: StateFormatError)
    GpuUnavailable = 11,  // CUDA was asked for and cannot be used: no driver / device, no backend in this build (JS: GpuUnavailableError)
};

constexpr uint64_t kNoOffset = UINT64_MAX;

class Error : public std::runtime_error {
public:
    Error(ErrorCode code, const std::string& message, uint64_t offset = kNoOffset)
        : std::runtime_error(message), code_(code), offset_(offset) {}

    ErrorCode code() const noexcept { return code_; }
    // Byte offset in the file the error refers to, or kNoOffset.
    uint64_t offset() const noexcept { return offset_; }
    bool has_offset() const noexcept { return offset_ != kNoOffset; }

private:
    ErrorCode code_;
    uint64_t offset_;
};

// OutOfMemory with the numbers a caller can act on: the bytes a plan needs on a device and the
// bytes available there (JS: OutOfMemoryError's neededBytes / availableBytes).
class MemoryError : public Error {
public:
    MemoryError(const std::string& message, uint64_t needed_bytes, uint64_t available_bytes)
        : Error(ErrorCode::OutOfMemory, message), needed_(needed_bytes), available_(available_bytes) {}

    uint64_t needed_bytes() const noexcept { return needed_; }
    uint64_t available_bytes() const noexcept { return available_; }

private:
    uint64_t needed_;
    uint64_t available_;
};

}  // namespace moe
