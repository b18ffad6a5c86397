// actions/cache stub: entries live in $ACT_STATE/cache/<key>/<n> (one folder per path line).
// main: restore the exact key, else the newest entry whose key starts with a restore-key;
// post (after a successful job): save under the key unless it already exists, as the real one.
// restore/ and save/ (actions/cache/restore, actions/cache/save) run one phase in their main step.
// Paths outside the workspace (`~/...`: uv's cache) are recorded, never copied: under act they
// are the caller's own folders, and copying a user's caches in and out is not ours to do.
const fs = require("fs");
const path = require("path");

const input = (name) => (process.env[`INPUT_${name.toUpperCase()}`] || "").trim();
const lines = (text) => text.split("\n").map((s) => s.trim()).filter(Boolean);
const store = path.join(process.env.ACT_STATE, "cache");
const key = input("key");
const paths = lines(input("path"));
// The main step leaves state behind (GITHUB_STATE); the runner hands it to the post step.
const only = process.env.ACT_CACHE_ONLY || "";
const isPost = only === "save" || (!only && process.env.STATE_ACT_CACHE_MAIN === "done");
const local = (p) => !p.startsWith("~") && !path.isAbsolute(p);

function record(entry) {
  fs.appendFileSync(process.env.ACT_RECORD, JSON.stringify({ tool: "stub:cache", job: process.env.GITHUB_JOB, ...entry }) + "\n");
}

function output(name, value) {
  fs.appendFileSync(process.env.GITHUB_OUTPUT, `${name}=${value}\n`);
}

if (!key) {
  console.log("::error::Input required and not supplied: key");
  process.exit(1);
}
fs.mkdirSync(store, { recursive: true });

if (!isPost) {
  if (!only) fs.appendFileSync(process.env.GITHUB_STATE, "ACT_CACHE_MAIN=done\n");
  const entries = fs.readdirSync(store).filter((k) => !k.startsWith("."));
  let hit = entries.includes(key) ? key : null;
  if (!hit) {
    for (const prefix of lines(input("restore-keys"))) {
      const found = entries
        .filter((k) => k.startsWith(prefix))
        .sort((a, b) => fs.statSync(path.join(store, b)).mtimeMs - fs.statSync(path.join(store, a)).mtimeMs);
      if (found.length) { hit = found[0]; break; }
    }
  }
  if (hit) {
    paths.forEach((p, i) => {
      const source = path.join(store, hit, String(i));
      if (local(p) && fs.existsSync(source)) fs.cpSync(source, p, { recursive: true });
    });
    console.log(`Cache restored from key: ${hit}`);
  } else {
    console.log(`Cache not found for input keys: ${[key, ...lines(input("restore-keys"))].join(", ")}`);
  }
  output("cache-hit", String(hit === key));
  record({ phase: "restore", key, restored: hit, paths });
} else {
  const target = path.join(store, key);
  if (fs.existsSync(target)) {
    console.log(`Cache hit occurred on the primary key ${key}, not saving cache.`);
    record({ phase: "save", key, saved: false });
  } else {
    paths.forEach((p, i) => {
      if (local(p) && fs.existsSync(p)) fs.cpSync(p, path.join(target, String(i)), { recursive: true });
    });
    fs.mkdirSync(target, { recursive: true });
    console.log(`Cache saved with key: ${key}`);
    record({ phase: "save", key, saved: true, paths });
  }
}
