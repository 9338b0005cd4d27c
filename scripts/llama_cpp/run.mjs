// Runs llama.cpp (through node-llama-cpp's prebuilt CPU binary, offline) on a GGUF file for the
// export tests: per-position logits, greedy decoding and tokenisation, as JSON on stdout.
//
// Usage: node scripts/llama_cpp/run.mjs PREFIX REQUEST.json
//   PREFIX: where scripts/llama_cpp/ensure.sh installed node-llama-cpp
//   REQUEST: {"model": "m.gguf", "context": 256, "lora": "adapter.gguf" (optional), "ops": [
//     {"op": "logits", "tokens": [..]}             -> {"logits": [[vocab floats] per position]}
//     {"op": "greedy", "tokens": [..], "n": 32}    -> {"tokens": [n ids], "top2": [[best, second] logits per step]}
//     {"op": "tokenize", "text": "..", "special": false} -> {"tokens": [..]}
//     {"op": "info"}                               -> {"vocab_size": n, "bos": id|null, "eos": id|null}
//   ]}
// The KV cache is kept in f32 (llama.cpp's default is f16) so that the comparison measures the
// exported weights, not cache rounding.
import {readFileSync} from "node:fs";
import {join} from "node:path";
import {pathToFileURL} from "node:url";

const [prefix, requestPath] = process.argv.slice(2);
if (!prefix || !requestPath) {
    console.error("usage: node run.mjs PREFIX REQUEST.json");
    process.exit(2);
}
const request = JSON.parse(readFileSync(requestPath, "utf8"));
const {getLlama, LlamaLogLevel} = await import(
    pathToFileURL(join(prefix, "node_modules", "node-llama-cpp", "dist", "index.js")).href);

const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath: request.model, gpuLayers: 0});
const context = await model.createContext({
    contextSize: request.context ?? 256,
    batchSize: request.context ?? 256,
    threads: 2,
    experimentalKvCacheKeyType: "F32",
    experimentalKvCacheValueType: "F32",
    ...(request.lora ? {lora: {adapters: [{filePath: request.lora, scale: request.lora_scale ?? 1}]}} : {}),
});

function toArray(map, n) {
    const out = new Array(n).fill(null);
    for (const [token, logit] of map) out[token] = logit;
    return out;
}

// Logits after each of `tokens`, on a fresh sequence.
async function logitsFor(sequence, tokens) {
    await sequence.clearHistory();
    const items = tokens.map((t) => [t, {generateNext: {logits: true}}]);
    const res = await sequence.controlledEvaluate(items);
    return res.map((r) => toArray(r.next.logits, r.next.logits.size));
}

function argmaxTop2(row) {
    let best = -1, second = -1;
    for (let i = 0; i < row.length; i++) {
        if (best < 0 || row[i] > row[best]) { second = best; best = i; }
        else if (second < 0 || row[i] > row[second]) second = i;
    }
    return [best, row[best], row[second]];
}

const sequence = context.getSequence();
const results = [];
for (const op of request.ops) {
    if (op.op === "logits") {
        results.push({logits: await logitsFor(sequence, op.tokens)});
    } else if (op.op === "greedy") {
        await sequence.clearHistory();
        const out = [], top2 = [];
        let res = await sequence.controlledEvaluate(
            op.tokens.map((t, i) => i + 1 === op.tokens.length ? [t, {generateNext: {logits: true}}] : t));
        for (let step = 0; step < op.n; step++) {
            const last = res[res.length - 1];
            const row = toArray(last.next.logits, last.next.logits.size);
            const [best, l1, l2] = argmaxTop2(row);  // ties: the lowest id, as torch.argmax
            out.push(best);
            top2.push([l1, l2]);
            if (step + 1 < op.n) res = await sequence.controlledEvaluate([[best, {generateNext: {logits: true}}]]);
        }
        results.push({tokens: out, top2});
    } else if (op.op === "tokenize") {
        results.push({tokens: Array.from(model.tokenize(op.text, op.special ?? false))});
    } else if (op.op === "info") {
        results.push({
            vocab_size: model.fileInsights.metadata?.tokenizer?.ggml?.tokens?.length ?? null,
            bos: model.tokens.bos ?? null,
            eos: model.tokens.eos ?? null,
            architecture: model.fileInfo.metadata.general.architecture,
        });
    } else {
        throw new Error(`unknown op ${op.op}`);
    }
}
process.stdout.write(JSON.stringify({results}));
await context.dispose();
await model.dispose();
await llama.dispose();
