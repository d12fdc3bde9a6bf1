// Walks interop/<format>/<handler>/<case>/ and checks every case of every implemented handler.
// Usage: node dist/main.js [INTEROP_DIR] [--only FORMAT[/HANDLER]] [--json]
import fs from "node:fs";
import path from "node:path";
import { type Json, type Outcome, Reject, parseJson, diff, hex, sha256, obj, str } from "./util.js";
import { HANDLERS, type Handler } from "./handlers.js";

type CaseResult = { name: string; ok: boolean; why?: string; note?: string };

function runCase(dir: string, h: Handler): CaseResult {
  const name = path.basename(dir);
  let meta: { [k: string]: Json };
  try {
    meta = obj(parseJson(fs.readFileSync(path.join(dir, "meta.json"), "utf8")));
  } catch (e) {
    return { name, ok: false, why: `meta.json: ${String(e)}` };
  }
  const expect = str(meta.expect ?? "");
  const inputName = str(meta.input ?? "");
  const outPath = path.join(dir, "output.json");
  const hasOut = fs.existsSync(outPath);
  if ((expect === "accept") !== hasOut) return { name, ok: false, why: `meta expect=${expect} but output.json ${hasOut ? "present" : "absent"}` };
  let input: Uint8Array;
  try {
    input = new Uint8Array(fs.readFileSync(path.join(dir, inputName)));
  } catch (e) {
    return { name, ok: false, why: `input: ${String(e)}` };
  }
  if (hex(sha256(input)) !== meta.input_sha256) return { name, ok: false, why: "input_sha256 mismatch (corrupted or edited vector)" };
  let got: Outcome;
  try {
    got = h(input, { dir, inputName, meta });
  } catch (e) {
    if (e instanceof Reject) got = { accept: false, reason: e.message };
    else return { name, ok: false, why: `verifier error: ${e instanceof Error ? e.stack ?? e.message : String(e)}` };
  }
  if (expect === "accept") {
    if (!got.accept) return { name, ok: false, why: `rejected (${got.reason}) but must accept` };
    let want: Json;
    try {
      want = parseJson(fs.readFileSync(outPath, "utf8"));
    } catch (e) {
      return { name, ok: false, why: `output.json: ${String(e)}` };
    }
    const d = h.project ? diff(h.project(got.output), h.project(want)) : diff(got.output, want);
    return d ? { name, ok: false, why: `output differs: ${d}` } : { name, ok: true };
  }
  if (got.accept) return { name, ok: false, why: `accepted but must reject (${String(meta.reason ?? "")})` };
  const code = got.reason.split(":")[0];
  const wantCode = typeof meta.reason === "string" ? meta.reason : "";
  return { name, ok: true, note: wantCode && code !== wantCode ? `rejected as ${code}, vector says ${wantCode}` : undefined };
}

function main(): number {
  const args = process.argv.slice(2);
  const json = args.includes("--json");
  const onlyIdx = args.indexOf("--only");
  const only = onlyIdx >= 0 ? args[onlyIdx + 1] : undefined;
  const pos = args.filter((a, i) => !a.startsWith("--") && (onlyIdx < 0 || i !== onlyIdx + 1));
  const root = pos[0] ?? "interop";
  if (!fs.existsSync(root) || !fs.statSync(root).isDirectory()) {
    console.error(`error: ${root} is not a directory`);
    return 2;
  }
  const report: { format: string; handler: string; cases: number; passed: number; failed: { case: string; why: string }[]; notes: string[] }[] = [];
  const notImplemented: string[] = [];
  let failures = 0;
  for (const format of fs.readdirSync(root).sort()) {
    const fdir = path.join(root, format);
    if (!fs.statSync(fdir).isDirectory() || format === "verifier-ts") continue;
    for (const handler of fs.readdirSync(fdir).sort()) {
      const hdir = path.join(fdir, handler);
      if (!fs.statSync(hdir).isDirectory()) continue;
      const key = `${format}/${handler}`;
      if (only && only !== format && only !== key) continue;
      const h = HANDLERS[key];
      if (!h) {
        notImplemented.push(key);
        continue;
      }
      const cases = fs.readdirSync(hdir).filter((c) => fs.statSync(path.join(hdir, c)).isDirectory()).sort();
      const entry = { format, handler, cases: cases.length, passed: 0, failed: [] as { case: string; why: string }[], notes: [] as string[] };
      for (const c of cases) {
        const r = runCase(path.join(hdir, c), h);
        if (r.ok) entry.passed++;
        else entry.failed.push({ case: c, why: r.why ?? "" });
        if (r.note) entry.notes.push(`${c}: ${r.note}`);
      }
      failures += entry.failed.length;
      report.push(entry);
    }
  }
  if (json) {
    console.log(JSON.stringify({ report, not_implemented: notImplemented, failures }, null, 1));
  } else {
    for (const e of report) {
      console.log(`${e.format}/${e.handler}: cases ${e.cases}, passed ${e.passed}, failed ${e.failed.length}`);
      for (const f of e.failed) console.log(`  FAIL ${f.case}: ${f.why}`);
      for (const n of e.notes) console.log(`  note ${n}`);
    }
    console.log(`not implemented: ${notImplemented.length ? notImplemented.join(", ") : "(none)"}`);
    const total = report.reduce((a, e) => a + e.cases, 0);
    console.log(`${failures === 0 ? "OK" : "FAILED"}: ${total - failures}/${total} cases passed in ${report.length} handlers`);
  }
  return failures === 0 ? 0 : 1;
}

process.exitCode = main();
