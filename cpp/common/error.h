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

}  // namespace moe
