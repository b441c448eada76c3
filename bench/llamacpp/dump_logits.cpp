// dump_logits TOKENS.txt OUT.f32 [llama.cpp common arguments: -m MODEL.gguf --control-vector CV.gguf ...]
//
// Loads the model, and any --control-vector / --control-vector-scaled / --control-vector-layer-range files,
// through llama.cpp's common library exactly as its tools do: common_params_parse, then common_init_from_params,
// which calls common_control_vector_load and llama_apply_adapter_cvec. Then, for each line of TOKENS.txt (token ids
// separated by spaces), clears the KV cache, decodes the line as one batch with logits at every position, and
// appends those logits (float32, n_tokens x n_vocab, row-major) to OUT.f32. Prints n_vocab on stdout.
#include "arg.h"
#include "common.h"
#include "llama.h"

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

static std::vector<std::vector<llama_token>> read_prompts(const char * path) {
    std::vector<std::vector<llama_token>> out;
    std::ifstream f(path);
    std::string line;
    while (std::getline(f, line)) {
        std::istringstream ss(line);
        std::vector<llama_token> ids;
        llama_token t;
        while (ss >> t) {
            ids.push_back(t);
        }
        if (!ids.empty()) {
            out.push_back(ids);
        }
    }
    return out;
}

static bool dump_prompt(llama_context * ctx, const std::vector<llama_token> & ids, int n_vocab, FILE * out) {
    llama_memory_clear(llama_get_memory(ctx), true);
    llama_batch batch = llama_batch_init((int) ids.size(), 0, 1);
    for (size_t i = 0; i < ids.size(); i++) {
        common_batch_add(batch, ids[i], (llama_pos) i, {0}, true);
    }
    bool ok = llama_decode(ctx, batch) == 0;
    for (size_t i = 0; ok && i < ids.size(); i++) {
        const float * row = llama_get_logits_ith(ctx, (int32_t) i);
        ok = row != nullptr && fwrite(row, sizeof(float), n_vocab, out) == (size_t) n_vocab;
    }
    llama_batch_free(batch);
    return ok;
}

int main(int argc, char ** argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s TOKENS.txt OUT.f32 [llama.cpp common arguments]\n", argv[0]);
        return 2;
    }
    const char * tokens_path = argv[1];
    const char * out_path = argv[2];
    argv[2] = argv[0];                          // common_params_parse sees: program, then the common arguments
    common_params params;
    if (!common_params_parse(argc - 2, argv + 2, params, LLAMA_EXAMPLE_COMMON)) {
        return 2;
    }
    common_init();
    llama_backend_init();
    common_init_result init = common_init_from_params(params);
    if (!init.model || !init.context) {
        fprintf(stderr, "dump_logits: common_init_from_params failed (model or control vector)\n");
        return 1;
    }
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(init.model.get()));
    auto prompts = read_prompts(tokens_path);
    FILE * out = fopen(out_path, "wb");
    if (out == nullptr) {
        fprintf(stderr, "dump_logits: cannot write %s\n", out_path);
        return 1;
    }
    for (const auto & ids : prompts) {
        if (!dump_prompt(init.context.get(), ids, n_vocab, out)) {
            fprintf(stderr, "dump_logits: decode failed\n");
            fclose(out);
            return 1;
        }
    }
    fclose(out);
    printf("%d\n", n_vocab);
    llama_backend_free();
    return 0;
}
