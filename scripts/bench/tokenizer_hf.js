// Reference side of scripts/bench/tokenizer.sh: Hugging Face's Rust tokenizers (npm
// `tokenizers`) on the same text, single-threaded as one text and as a batch of strings.
//   node tokenizer_hf.js single|batch TOKENIZER_JSON CORPUS_JSON REPEAT RUNS IDS_OUT
// "single" encodes the joined text in one call (run it with RAYON_NUM_THREADS=1), "batch" the
// strings with encodeBatch on the library's thread pool.
const fs = require("fs");
const { Tokenizer } = require("tokenizers");
const [mode, tokPath, corpusPath, repeatArg, runsArg, idsOut] = process.argv.slice(2);
const repeat = Number(repeatArg), runs = Number(runsArg);
const corpus = JSON.parse(fs.readFileSync(corpusPath, "utf8"));
const text = Array(repeat).fill(corpus.join("\n")).join("");
const texts = [];
for (let r = 0; r < repeat; ++r) texts.push(...corpus);
const bytes = Buffer.byteLength(text), batchBytes = texts.reduce((a, t) => a + Buffer.byteLength(t), 0);

// Median wall and CPU seconds (CPU: the whole process, user + system).
async function median(f) {
  await f();  // warm-up
  const wall = [], cpu = [];
  for (let i = 0; i < runs; ++i) {
    const t0 = process.hrtime.bigint(), c0 = process.cpuUsage();
    await f();
    wall.push(Number(process.hrtime.bigint() - t0) / 1e9);
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1e6);
  }
  wall.sort((a, b) => a - b);
  cpu.sort((a, b) => a - b);
  return { wall: wall[Math.floor(runs / 2)], cpu: cpu[Math.floor(runs / 2)] };
}

(async () => {
  const t0 = process.hrtime.bigint();
  const tok = Tokenizer.fromFile(tokPath);
  const loadS = Number(process.hrtime.bigint() - t0) / 1e9;
  if (mode === "single") {
    let ids;
    const single = await median(async () => {
      ids = (await tok.encode(text, null, { addSpecialTokens: false })).getIds();
    });
    fs.writeFileSync(idsOut, JSON.stringify(Array.from(ids)) + "\n");
    console.log(JSON.stringify({ bytes, tokens: ids.length, load_s: loadS, single_mb_s: bytes / single.wall / 1e6,
                                 single_mb_per_cpu_s: bytes / single.cpu / 1e6 }));
  } else {
    let encs;
    const batch = await median(async () => {
      encs = await tok.encodeBatch(texts, { addSpecialTokens: false });
    });
    fs.writeFileSync(idsOut, JSON.stringify(encs.map((e) => Array.from(e.getIds()))) + "\n");
    console.log(JSON.stringify({ bytes: batchBytes, texts: texts.length, batch_mb_s: batchBytes / batch.wall / 1e6,
                                 batch_cpu_s_per_wall_s: batch.cpu / batch.wall }));
  }
})().catch((e) => { console.error(e); process.exit(1); });
