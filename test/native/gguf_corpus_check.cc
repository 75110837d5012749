// gguf_corpus_check <dir>: opens every regular file in <dir> (sorted by name) with
// GgufFile::open. A file is handled correctly when it either loads (and then keeps every promise
// checked by gguf_invariant_violation) or is rejected with moe::Error(GgufFormat). Any other
// error code or exception is a failure. Meant to run under ASan/UBSan over a corpus of corrupted
// files, so crashes and overreads surface as sanitizer reports.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "../../cpp/common/error.h"
#include "../../cpp/gguf/gguf_file.h"
#include "gguf_invariants.h"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s <dir>\n", argv[0]);
        return 2;
    }

    std::vector<fs::path> files;
    std::error_code ec;
    for (fs::directory_iterator it(argv[1], ec), end; !ec && it != end; it.increment(ec)) {
        std::error_code type_ec;
        if (it->is_regular_file(type_ec)) files.push_back(it->path());
    }
    if (ec) {
        std::fprintf(stderr, "cannot list '%s': %s\n", argv[1], ec.message().c_str());
        return 1;
    }
    std::sort(files.begin(), files.end());

    int loaded = 0, rejected = 0, passed = 0, failed = 0;
    for (const fs::path& path : files) {
        std::string failure;
        try {
            auto f = moe::gguf::GgufFile::open(path.string());
            failure = moe_test::gguf_invariant_violation(*f);
            if (failure.empty()) ++loaded;
        } catch (const moe::Error& e) {
            if (e.code() == moe::ErrorCode::GgufFormat) {
                ++rejected;
            } else {
                failure = "moe::Error code " + std::to_string(static_cast<int>(e.code())) + ": " + e.what();
            }
        } catch (const std::exception& e) {
            failure = std::string("unexpected exception: ") + e.what();
        } catch (...) {
            failure = "unexpected non-standard exception";
        }
        if (failure.empty()) {
            ++passed;
        } else {
            ++failed;
            std::printf("FAIL %s: %s\n", path.string().c_str(), failure.c_str());
        }
    }

    std::printf("%d loaded, %d rejected\n", loaded, rejected);
    std::printf("%d passed, %d failed\n", passed, failed);
    if (files.empty()) {
        std::fprintf(stderr, "no files in '%s'\n", argv[1]);
        return 1;
    }
    return failed == 0 ? 0 : 1;
}
