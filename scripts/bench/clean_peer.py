#!/usr/bin/python3
"""The usual Python way to clean fine-tuning records, as the baseline for `dsft clean`.

  /usr/bin/python3 scripts/bench/clean_peer.py records.jsonl -o clean.jsonl --rejects rejects.jsonl --report report.json
  /usr/bin/python3 scripts/bench/clean_peer.py --eval-pii tests/data/fixtures/clean/pii_labelled.jsonl

Same job as dsft clean with its defaults: BeautifulSoup for markup, unicodedata for NFC,
`re` for PII (the patterns people copy around, plus the ID checksum and Luhn), langdetect for the
language, md5 for exact duplicates, a numpy MinHash (as datasketch does it) with LSH banding for
near-duplicates, the same quality checks and a hash split. Single process, as such scripts run.
"""
import argparse
import hashlib
import json
import re
import sys
import time
import unicodedata

import numpy as np
from bs4 import BeautifulSoup
from langdetect import DetectorFactory, detect_langs

DetectorFactory.seed = 0

# ---- PII ------------------------------------------------------------------------------------
ID_W = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]


def id_ok(s):
    s = s.upper()
    if len(s) != 18:
        return True
    return "10X98765432"[sum(int(c) * w for c, w in zip(s[:17], ID_W)) % 11] == s[17]


def luhn_ok(s):
    d = [int(c) for c in s if c.isdigit()]
    total = 0
    for i, v in enumerate(reversed(d)):
        if i % 2:
            v *= 2
            if v > 9:
                v -= 9
        total += v
    return total % 10 == 0


PII = [  # (type, compiled regex, validator)
    ("URL_CREDENTIALS", re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:@/]*:[^\s@/]+@[^\s/?#]+[^\s]*"), None),
    ("API_KEY", re.compile(r"\b(?:sk-[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}|xox[abpors]-[A-Za-z0-9-]{10,}|"
                           r"AIza[0-9A-Za-z_-]{35}|glpat-[A-Za-z0-9_-]{20,}|hf_[A-Za-z0-9]{30,}|sk_live_[0-9A-Za-z]{16,})"), None),
    ("API_KEY", re.compile(r"(?i)(?:api[_-]?key|secret|token|password|passwd)\s*[:=]\s*['\"]?([^\s'\"]{8,})"), None),
    ("EMAIL", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"), None),
    ("ID_CARD", re.compile(r"(?<!\d)[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx](?!\d)"), id_ok),
    ("BANK_CARD", re.compile(r"(?<!\d)(?:\d{4}[ -]?){3}\d{4}(?:\d{3})?(?!\d)|(?<!\d)62\d{14,17}(?!\d)"), luhn_ok),
    ("PHONE", re.compile(r"(?<!\d)(?:\+?86[- ]?)?1[3-9]\d[- ]?\d{4}[- ]?\d{4}(?!\d)"), None),
    ("PHONE", re.compile(r"(?<!\d)(?:\(?0\d{2,3}\)?[- ]?)\d{7,8}(?!\d)"), None),
    ("PHONE", re.compile(r"\+\d{1,3}[- ]?\(?\d{1,4}\)?(?:[- ]?\d{2,4}){2,4}"), None),
    ("PHONE", re.compile(r"(?<!\d)\(?\d{3}\)?[-. ]\d{3}[-. ]\d{4}(?!\d)"), None),
    ("IP", re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.])"), None),
    ("IP", re.compile(r"(?i)(?<![:\w])(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}|(?:[0-9a-f]{1,4}:){1,6}:(?:[0-9a-f]{1,4}:?){0,6}[0-9a-f]{0,4}"), None),
    ("PASSPORT", re.compile(r"(?i)(?:passport|护照)[^\n]{0,15}?\b([EGDSP][A-Z]?\d{7,8})\b"), None),
]


def find_pii(text):
    spans = []
    for kind, rx, check in PII:
        for m in rx.finditer(text):
            g = m.lastindex or 0
            b, e = (m.start(g), m.end(g)) if g else (m.start(), m.end())
            if check and not check(text[b:e].replace(" ", "").replace("-", "")):
                continue
            spans.append((b, e, kind))
    spans.sort(key=lambda s: (s[0], -s[1]))
    merged = []
    for s in spans:
        if merged and s[0] < merged[-1][1]:
            last = merged[-1]
            merged[-1] = (last[0], max(last[1], s[1]), last[2] if last[1] - last[0] >= s[1] - s[0] else s[2])
        else:
            merged.append(s)
    return merged


def mask(text, counts):
    out, pos = [], 0
    for b, e, kind in find_pii(text):
        out.append(text[pos:b])
        out.append("[%s]" % kind)
        counts[kind] = counts.get(kind, 0) + 1
        pos = e
    out.append(text[pos:])
    return "".join(out)


# ---- text filters -----------------------------------------------------------------------------
TAG = re.compile(r"</?[a-zA-Z][^>]*>|&[a-zA-Z]+;|&#\d+;")
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\u2060\ufeff\u00ad]")
SPACES = re.compile(r"[ \u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")


def clean_text(s, stats):
    if TAG.search(s):
        soup = BeautifulSoup(s, "html.parser")
        for t in soup(["script", "style", "noscript", "template"]):
            t.decompose()
        s = soup.get_text("\n")
        stats["html"] += 1
    s = unicodedata.normalize("NFC", s)
    s = s.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n\n")
    s = CONTROL.sub("", s)
    s = "\n".join(SPACES.sub(" ", line).strip() for line in s.split("\n"))
    s = re.sub(r"\n{3,}", "\n\n", s).strip()
    return s


def quality(shape, rec, joined):
    if shape == "alpaca" and not rec.get("output"):
        return "empty_output"
    if shape == "messages" and any(m.get("role") == "assistant" and not m.get("content") for m in rec["messages"]):
        return "empty_turn"
    n = len(joined)
    if n < 5:
        return "min_chars"
    if n > 200000:
        return "max_chars"
    ns = [c for c in joined if not c.isspace()]
    if ns:
        sym = sum(1 for c in ns if not c.isalnum()) / len(ns)
        if sym > 0.4:
            return "symbol_ratio"
        if sum(1 for c in ns if c.isdigit()) / len(ns) > 0.5:
            return "digit_ratio"
    lines = [l.strip() for l in joined.split("\n") if l.strip()]
    if len(lines) >= 3 and (len(lines) - len(set(lines))) / len(lines) > 0.5:
        return "repeated_lines"
    return None


# ---- near-duplicates: datasketch-style MinHash -------------------------------------------------
MERSENNE = np.uint64((1 << 61) - 1)
RNG = np.random.RandomState(1)
NUM_PERM = 128
A = RNG.randint(1, (1 << 61) - 1, size=NUM_PERM, dtype=np.uint64)
B = RNG.randint(0, (1 << 61) - 1, size=NUM_PERM, dtype=np.uint64)
BANDS, ROWS = 9, 13


def minhash(text, k=5):
    t = re.sub(r"\s+", "", text.lower())
    sh = {t[i:i + k] for i in range(max(1, len(t) - k + 1))}
    hv = np.array([int.from_bytes(hashlib.sha1(s.encode()).digest()[:4], "little") for s in sh], dtype=np.uint64)
    ph = ((np.outer(hv, A) + B) % MERSENNE) & np.uint64(0xFFFFFFFF)
    return ph.min(axis=0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("input", nargs="?")
    ap.add_argument("-o", "--output")
    ap.add_argument("--rejects")
    ap.add_argument("--report")
    ap.add_argument("--eval-pii")
    a = ap.parse_args()
    if a.eval_pii:
        return eval_pii(a.eval_pii)
    t0 = time.time()
    stats = {"html": 0}
    counts, rejected, langs = {}, {}, {}
    seen, buckets, sigs, ids = {}, [dict() for _ in range(BANDS)], [], []
    n_in = n_out = 0
    with open(a.input, "rb") as f, open(a.output, "w", encoding="utf-8") as out, open(a.rejects, "w", encoding="utf-8") as rej:
        for line_no, raw in enumerate(f, 1):
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            n_in += 1

            def reject(filt, reason, rec=None):
                rejected[filt] = rejected.get(filt, 0) + 1
                rej.write(json.dumps({"filter": filt, "reason": reason, "line": line_no,
                                      "id": (rec or {}).get("id"), "record": rec if rec else mask(line, counts)},
                                     ensure_ascii=False) + "\n")
            try:
                rec = json.loads(line)
            except ValueError:
                reject("json", "invalid JSON")
                continue
            if "messages" in rec:
                shape, fields = "messages", [m for m in rec["messages"]]
            elif "instruction" in rec:
                shape, fields = "alpaca", None
            elif "text" in rec:
                shape, fields = "text", None
            else:
                reject("schema", "no text field", rec)
                continue
            texts = []
            if shape == "messages":
                for m in rec["messages"]:
                    m["content"] = mask(clean_text(m.get("content") or "", stats), counts)
                    texts.append(m["content"])
            else:
                for k in (["text"] if shape == "text" else ["instruction", "input", "output"]):
                    if k in rec:
                        rec[k] = mask(clean_text(rec[k] or "", stats), counts)
                        texts.append(rec[k])
            joined = "\n".join(texts)
            q = quality(shape, rec, joined)
            if q:
                reject("quality", q, rec)
                continue
            try:
                lang = detect_langs(joined)[0].lang
            except Exception:
                lang = "un"
            lang = "zh" if lang.startswith("zh") else lang
            langs[lang] = langs.get(lang, 0) + 1
            h = hashlib.md5(json.dumps(texts, ensure_ascii=False).encode()).hexdigest()
            if h in seen:
                reject("exact_dup", "duplicate of %s" % seen[h], rec)
                continue
            sig = minhash(joined)
            dup = None
            for b in range(BANDS):
                key = sig[b * ROWS:(b + 1) * ROWS].tobytes()
                for j in buckets[b].get(key, []):
                    if (sigs[j] == sig).mean() >= 0.8:
                        dup = j
                        break
                if dup is not None:
                    break
            if dup is not None:
                reject("near_dup", "near duplicate of %s" % ids[dup], rec)
                continue
            seen[h] = rec.get("id")
            for b in range(BANDS):
                buckets[b].setdefault(sig[b * ROWS:(b + 1) * ROWS].tobytes(), []).append(len(sigs))
            sigs.append(sig)
            ids.append(rec.get("id"))
            u = int(hashlib.md5(str(rec.get("id")).encode()).hexdigest()[:8], 16) / 2 ** 32
            rec["split"] = "train" if u < 0.9 else "validation" if u < 0.95 else "test"
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n_out += 1
    rep = {"input": n_in, "output": n_out, "rejected": rejected, "pii_masked": counts, "languages": langs,
           "html_stripped": stats["html"], "seconds": time.time() - t0}
    with open(a.report, "w") as f:
        json.dump(rep, f, indent=2)
    print("peer: %d in, %d out, %.1f s" % (n_in, n_out, rep["seconds"]), file=sys.stderr)


def eval_pii(path):
    """Recall/precision with the rules of tests/data/pii_test.cpp (overlap, same type)."""
    by = {}
    for line in open(path, encoding="utf-8"):
        item = json.loads(line)
        text = item["text"]
        want = []
        for p in item["pii"]:
            start = text.find(p["value"])
            while start >= 0:
                want.append((start, start + len(p["value"]), p["type"]))
                start = text.find(p["value"], start + 1)
        got = find_pii(text)
        for b, e, t in want:
            s = by.setdefault(t, [0, 0, 0, 0])
            s[0] += 1
            s[1] += any(g[2] == t and g[0] < e and b < g[1] for g in got)
        for gb, ge, gt in got:
            s = by.setdefault(gt, [0, 0, 0, 0])
            s[2] += 1
            s[3] += any(t == gt and gb < e and b < ge for b, e, t in want)
    tot = [0, 0, 0, 0]
    print("%-16s %8s %8s %9s %9s" % ("type", "expected", "found", "recall", "precision"))
    for t in sorted(by):
        s = by[t]
        print("%-16s %8d %8d %8.1f%% %8.1f%%" % (t, s[0], s[2], 100 * s[1] / max(1, s[0]), 100 * s[3] / max(1, s[2])))
        tot = [x + y for x, y in zip(tot, s)]
    print("%-16s %8d %8d %8.1f%% %8.1f%%" % ("overall", tot[0], tot[2], 100 * tot[1] / tot[0], 100 * tot[3] / tot[2]))


if __name__ == "__main__":
    main()
