#include "mapped_file.h"

#if defined(_WIN32)
#error "MappedFile is implemented for POSIX systems (Linux, macOS) only"
#endif

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "../common/error.h"

namespace moe::gguf {

namespace {

[[noreturn]] void fail(const std::string& path, const char* reason) {
    throw Error(ErrorCode::Io, "cannot open '" + path + "': " + reason);
}

// Closes the descriptor on every exit path; the mapping stays valid after close.
struct FdGuard {
    int fd;
    ~FdGuard() { ::close(fd); }
};

}  // namespace

MappedFile::MappedFile(const std::string& path) : path_(path) {
    // O_NONBLOCK keeps a FIFO passed by mistake from blocking open(); it is rejected below
    // as not a regular file. It has no effect on regular files.
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) fail(path, std::strerror(errno));
    FdGuard guard{fd};

    struct stat st;
    if (::fstat(fd, &st) != 0) fail(path, std::strerror(errno));
    if (S_ISDIR(st.st_mode)) fail(path, std::strerror(EISDIR));
    if (!S_ISREG(st.st_mode)) fail(path, "not a regular file");
    if (st.st_size < 0 || static_cast<uint64_t>(st.st_size) > SIZE_MAX) fail(path, "file too large to map");

    size_ = static_cast<uint64_t>(st.st_size);
    if (size_ == 0) return;  // mmap rejects zero-length mappings; an empty file maps to nothing

    void* p = ::mmap(nullptr, static_cast<size_t>(size_), PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) fail(path, std::strerror(errno));
    data_ = static_cast<const uint8_t*>(p);
}

MappedFile::~MappedFile() {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), static_cast<size_t>(size_));
}

void MappedFile::release_range(uint64_t offset, uint64_t length) const noexcept {
    if (!data_ || offset >= size_) return;
    if (length > size_ - offset) length = size_ - offset;
    const long page_l = ::sysconf(_SC_PAGESIZE);
    const uint64_t page = page_l > 0 ? static_cast<uint64_t>(page_l) : 4096;

    // Only whole pages inside the range may be dropped: a partial page at either end may hold
    // bytes the caller still needs. The mapping itself starts on a page boundary, and the tail of
    // the file's last page holds no file bytes, so a range reaching the end may include it.
    const uint64_t end = offset + length;  // <= size_, no overflow
    const uint64_t first = (offset + page - 1) / page * page;
    const uint64_t last = end == size_ ? (end + page - 1) / page * page : end / page * page;
    if (first >= last) return;
    // MAP_PRIVATE pages we never wrote are simply re-read from the file if touched again.
    ::madvise(const_cast<uint8_t*>(data_) + first, static_cast<size_t>(last - first), MADV_DONTNEED);
}

}  // namespace moe::gguf
