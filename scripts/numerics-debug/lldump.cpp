// Runs a GGUF through llama.cpp (see README.md) and dumps named graph tensors.
// Runs a GGUF through llama.cpp (CPU, no flash attention) teacher-forced over the given tokens and
// dumps named graph tensors (F32) to <dir>/<name>.bin plus <name>.shape.
#include "llama.h"
#include "ggml.h"
#include "ggml-backend.h"
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
#include <set>
static std::string g_dir;
static std::set<std::string> g_names;
static bool cb(struct ggml_tensor * t, bool ask, void *) {
    std::string name = t->name;
    bool want = g_names.empty() || g_names.count(name);
    if (ask) return want;
    if (!want || t->type != GGML_TYPE_F32) return true;
    std::vector<float> buf(ggml_nelements(t));
    if (!ggml_is_contiguous(t)) return true;
    ggml_backend_tensor_get(t, buf.data(), 0, ggml_nbytes(t));
    std::string fn = g_dir + "/" + name + ".bin";
    FILE* f = fopen(fn.c_str(), "wb"); fwrite(buf.data(), 4, buf.size(), f); fclose(f);
    fn = g_dir + "/" + name + ".shape";
    f = fopen(fn.c_str(), "w"); fprintf(f, "%lld %lld %lld %lld\n", (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3]); fclose(f);
    return true;
}
int main(int argc, char** argv) {
    // lldump model.gguf outdir "tok,tok,..." [names,comma]
    g_dir = argv[2];
    std::vector<llama_token> toks;
    for (char* p = strtok(argv[3], ","); p; p = strtok(nullptr, ",")) toks.push_back(atoi(p));
    if (argc > 4) for (char* p = strtok(argv[4], ","); p; p = strtok(nullptr, ",")) g_names.insert(p);
    llama_backend_init();
    auto mp = llama_model_default_params(); mp.n_gpu_layers = 0;
    llama_model* model = llama_model_load_from_file(argv[1], mp);
    auto cp = llama_context_default_params();
    cp.n_ctx = 256; cp.n_batch = 512; cp.n_ubatch = 512; cp.n_threads = 2; cp.n_threads_batch = 2;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.cb_eval = cb; cp.cb_eval_user_data = nullptr;
    llama_context* ctx = llama_init_from_model(model, cp);
    llama_batch b = llama_batch_init(toks.size(), 0, 1);
    for (size_t i = 0; i < toks.size(); ++i) { b.token[i] = toks[i]; b.pos[i] = i; b.n_seq_id[i] = 1; b.seq_id[i][0] = 0; b.logits[i] = 1; }
    b.n_tokens = toks.size();
    if (llama_decode(ctx, b) != 0) { fprintf(stderr, "decode failed\n"); return 1; }
    const int nv = llama_vocab_n_tokens(llama_model_get_vocab(model));
    std::string fn = g_dir + "/logits.bin"; FILE* f = fopen(fn.c_str(), "wb");
    for (size_t i = 0; i < toks.size(); ++i) fwrite(llama_get_logits_ith(ctx, i), 4, nv, f);
    fclose(f);
    llama_batch_free(b); llama_free(ctx); llama_model_free(model);
    return 0;
}
