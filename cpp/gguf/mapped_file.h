// A read-only memory map of a whole file. Closing happens in the destructor, so an aborted load
// releases everything it mapped by simply dropping the object.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace moe::gguf {

class MappedFile {
public:
    // Maps `path` read-only. Throws moe::Error(Io) with the errno text on failure.
    // An empty file yields size() == 0 and data() == nullptr.
    explicit MappedFile(const std::string& path);
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const uint8_t* data() const noexcept { return data_; }
    uint64_t size() const noexcept { return size_; }
    const std::string& path() const noexcept { return path_; }

    // Tells the kernel a byte range will not be needed soon (after a repack copied it).
    void release_range(uint64_t offset, uint64_t length) const noexcept;

private:
    std::string path_;
    const uint8_t* data_ = nullptr;
    uint64_t size_ = 0;
};

}  // namespace moe::gguf
